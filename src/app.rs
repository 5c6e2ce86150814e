//! Wires the parts into the daemon (`mailboxd run`): store → intake, worker, alert sender,
//! outcome publisher (and IdentityIQ launcher), reconcile schedule, and the admin listener with the API and the dashboard on it. The
//! parts do not know each other's wiring; it is all here, in the order things start.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{Access, Token};
use crate::admin::AdminState;
use crate::circuit::Circuit;
use crate::config::{Settings, WinrmAuth};
use crate::directory::Directory;
use crate::exchange::Exchange;
use crate::health::{Health, Task, supervise};
use crate::signin::{SignIn, SignInConfig};
use crate::store::Store;
use crate::{admin, dashboard, intake, worker};
use winrm::{Auth, ClientConfig, WinrmClient};

/// A running daemon.
pub struct App {
    pub admin_addr: SocketAddr,
    pub store: Store,
    pub replica: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    grace: std::time::Duration,
    /// Its warm processes are ended at shutdown.
    exchange: Exchange,
}

/// Builds the WinRM client from `[winrm]`, refusing what would be unsafe.
pub fn winrm_client(s: &Settings) -> anyhow::Result<WinrmClient> {
    let endpoint = url::Url::parse(&s.winrm.endpoint).context("winrm.endpoint")?;
    let password: SecretString = s
        .winrm
        .password
        .clone()
        .context("no WinRM password: set MAILBOXD_WINRM_PASSWORD or winrm.password_file")?;
    let auth = match s.winrm.auth {
        WinrmAuth::Basic => Auth::Basic,
        WinrmAuth::Ntlm => Auth::Ntlm,
        WinrmAuth::Kerberos => Auth::Kerberos,
        WinrmAuth::CredSsp => Auth::CredSsp,
    };
    // NTLM and Kerberos seal every message over plain HTTP; Basic would not.
    if endpoint.scheme() == "http" && auth == Auth::Basic {
        if s.winrm.allow_unencrypted {
            tracing::warn!(endpoint = %endpoint, "winrm.allow_unencrypted is set: the WinRM password and all data cross the network in clear text");
        } else {
            anyhow::bail!(
                "winrm.endpoint {endpoint} is plain HTTP: use https:// (port 5986), or set winrm.allow_unencrypted = true knowingly"
            );
        }
    }
    let mut cfg = ClientConfig::new(endpoint, s.winrm.username.clone(), password);
    cfg.auth = auth;
    cfg.allow_unencrypted = s.winrm.allow_unencrypted;
    cfg.ca_file = s.winrm.ca_file.clone();
    cfg.operation_timeout = s.winrm.operation_timeout;
    cfg.kdc = s.winrm.kdc.clone();
    cfg.spn = s.winrm.spn.clone();
    cfg.credssp_cert_sha256 = s.winrm.credssp_cert_sha256.clone();
    cfg.credssp_skip_cert_check = s.winrm.credssp_skip_cert_check;
    Ok(WinrmClient::new(cfg)?)
}

/// The circuit breaker from `[worker]`: refused credentials pause it for at least
/// `credential_probe_interval` (AD's lockout window).
fn circuit(settings: &Settings) -> Arc<Circuit> {
    Arc::new(
        Circuit::new(
            settings.worker.circuit_threshold,
            settings.worker.circuit_cooldown,
        )
        .with_credential_floor(settings.worker.credential_probe_interval),
    )
}

impl App {
    /// Connects, migrates and starts every part. Returns once the admin listener is bound.
    pub async fn start(settings: Settings) -> anyhow::Result<App> {
        crate::metrics::handle();
        let store = Store::connect(&settings.database.url, settings.database.max_connections)
            .await
            .context("connecting to PostgreSQL")?
            .delivering_to_identityiq(settings.identityiq.base_url.is_some());
        store.migrate().await.context("migrating the database")?;
        let budget = crate::budget::SessionBudget::start(
            store.clone(),
            crate::replica_name().to_owned(),
            settings.exchange.max_sessions,
            settings.exchange.session_lease,
            crate::budget::CmdletLimit::from_config(&settings.exchange).map(|limit| {
                crate::budget::CmdletBudget::new(
                    store.clone(),
                    crate::replica_name().to_owned(),
                    limit,
                    settings.exchange.session_lease,
                )
            }),
        )
        .await
        .context("setting up the Exchange session budget")?;
        let exchange = exchange(&settings)?.with_budget(budget.clone());
        let directory = Directory::from_config(&settings.ldap)?;
        let signin = signin(&settings, directory.clone(), &store).await;
        let replica = crate::replica_name().to_owned();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (connected_tx, connected_rx) = watch::channel(false);
        let circuit = circuit(&settings);

        let health = Health::new(settings.amqp.stall_after);
        let report = intake::Reporting {
            connected: connected_tx,
            health: health.clone(),
        };
        let mut tasks = feeders(&settings, &store, directory.as_ref(), report, &shutdown_rx);
        let w = worker::Worker {
            store: store.clone(),
            exchange: exchange.clone(),
            cfg: settings.worker.clone(),
            batch_size: budget
                .batch_size(settings.exchange.batch_size, exchange.session_cmdlets())?,
            batch_linger: settings.exchange.batch_linger,
            remote_routing_domain: settings.exchange.remote_routing_domain.clone(),
            replica: replica.clone(),
            circuit: circuit.clone(),
            directory,
            require_cloud_sync: settings.ldap.require_cloud_sync,
            budget: budget.clone(),
        };
        tasks.push(tokio::spawn(w.run(shutdown_rx.clone(), health.clone())));
        tasks.extend(senders(&settings, &store, &health, &shutdown_rx)?);
        let parts = (connected_rx, health, circuit, budget);
        let state = admin_state(&settings, &store, parts, signin);
        let (admin_addr, admin) = serve_admin(&settings.admin, state, shutdown_rx).await?;
        tasks.push(admin);
        tracing::info!(%admin_addr, replica = %replica, "mailboxd running");
        Ok(App {
            admin_addr,
            store,
            replica,
            shutdown,
            tasks,
            grace: settings.worker.shutdown_grace,
            exchange,
        })
    }

    /// Stops claiming, lets in-flight batches finish within `worker.shutdown_grace`, then
    /// releases what is still running so another replica takes it at once (the directory
    /// check makes running it again safe). Deliveries not yet committed stay unacked and
    /// the broker redelivers them.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + self.grace;
        let mut late = 0;
        for t in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                late += 1;
            }
        }
        match self.store.release_running(&self.replica).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                tasks = late,
                "shutdown deadline passed: released running jobs for another replica"
            ),
            Err(e) => {
                tracing::error!(error = %e, "cannot release running jobs; they run again after their lease")
            }
        }
        // Warm processes end with their shells, rather than holding the host's quotas until
        // its idle timeout.
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.exchange.close()).await;
    }
}

/// An `App` dropped without `stop` (a caller that failed or panicked) ends its tasks at
/// once, so it takes nothing more from the broker or the database.
impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The tasks that bring work in, each supervised: intake and, when scheduled, reconcile.
fn feeders(
    settings: &Settings,
    store: &Store,
    directory: Option<&Directory>,
    report: intake::Reporting,
    shutdown: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let health = report.health.clone();
    let (amqp, st, max_attempts, stop) = (
        settings.amqp.clone(),
        store.clone(),
        settings.worker.max_attempts,
        shutdown.clone(),
    );
    let intake = supervise(
        Task::one("intake"),
        health.clone(),
        shutdown.clone(),
        move || {
            // A restarted intake is not connected until it has connected again.
            report.connected.send_replace(false);
            intake::run(
                amqp.clone(),
                st.clone(),
                max_attempts,
                stop.clone(),
                report.clone(),
            )
        },
    );
    let mut tasks = vec![tokio::spawn(intake)];
    if let (Some(dir), Some(every)) = (directory, settings.reconcile.interval) {
        let (dir, st, cfg, stop) = (
            dir.clone(),
            store.clone(),
            settings.reconcile.clone(),
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(supervise(
            Task::one("reconcile_schedule"),
            health,
            shutdown.clone(),
            move || {
                let (dir, st, cfg) = (dir.clone(), st.clone(), cfg.clone());
                crate::reconcile::scheduled(dir, st, cfg, max_attempts, every, stop.clone())
            },
        )));
    }
    tasks
}

/// The tasks that tell people what happened, each supervised: the alert sender, the outcome
/// publisher and, when configured, the IdentityIQ launcher.
fn senders(
    settings: &Settings,
    store: &Store,
    health: &Arc<Health>,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let (st, smtp, url, stop) = (
        store.clone(),
        settings.smtp.clone(),
        settings.admin.public_url.clone(),
        shutdown.clone(),
    );
    let alerts = supervise(
        Task::one("alert_sender"),
        health.clone(),
        shutdown.clone(),
        move || crate::alert::sender::run(st.clone(), smtp.clone(), url.clone(), stop.clone()),
    );
    let (st, amqp, cfg, stop) = (
        store.clone(),
        settings.amqp.clone(),
        settings.outcomes.clone(),
        shutdown.clone(),
    );
    let outcomes = supervise(
        Task::one("outcome_publisher"),
        health.clone(),
        shutdown.clone(),
        move || crate::outcomes::run(st.clone(), amqp.clone(), cfg.clone(), stop.clone()),
    );
    let mut tasks = vec![tokio::spawn(alerts), tokio::spawn(outcomes)];
    if let Some(iiq) = crate::identityiq::Client::from_config(&settings.identityiq)? {
        let (st, cfg, stop) = (store.clone(), settings.outcomes.clone(), shutdown.clone());
        tasks.push(tokio::spawn(supervise(
            Task::one("identityiq_launcher"),
            health.clone(),
            shutdown.clone(),
            move || crate::identityiq::run(st.clone(), iiq.clone(), cfg.clone(), stop.clone()),
        )));
    }
    Ok(tasks)
}

/// The Exchange side from `[exchange]` and `[winrm]`, with a warning for a warm-session
/// count the host or the workers cannot use.
fn exchange(settings: &Settings) -> anyhow::Result<Exchange> {
    // Also for settings that did not come through Settings::load (embedded uses).
    settings.validate_exchange()?;
    if settings.exchange.mode == crate::config::ExchangeMode::None {
        tracing::warn!(
            "exchange.mode = \"none\": a fresh powershell.exe -NoProfile has no Exchange cmdlets, so every batch fails with CommandNotFoundException unless the host provides them some other way"
        );
    }
    let client = winrm_client(settings)?;
    let exchange = Exchange::new(client, &settings.exchange, settings.winrm.endpoint.clone())
        .redacting(settings.secret_values());
    let warm = settings.exchange.warm_sessions;
    if warm >= 18 {
        tracing::warn!(
            warm_sessions = warm,
            "exchange.warm_sessions reaches Exchange's default PowerShellMaxConcurrency (18 sessions per user): unless the host's throttling policy was raised, sessions beyond it are refused"
        );
    }
    if warm > settings.worker.concurrency as usize {
        tracing::warn!(
            warm_sessions = warm,
            concurrency = settings.worker.concurrency,
            "exchange.warm_sessions is above worker.concurrency: the extra processes are never used"
        );
    }
    Ok(exchange)
}

/// What the admin listener reports: (the broker link, the daemon's health, the circuit, the
/// Exchange session budget).
type Reported = (
    watch::Receiver<bool>,
    Arc<Health>,
    Arc<Circuit>,
    Arc<crate::budget::SessionBudget>,
);

fn admin_state(
    settings: &Settings,
    store: &Store,
    (broker_connected, health, circuit, budget): Reported,
    signin: SignIn,
) -> AdminState {
    AdminState {
        store: store.clone(),
        health,
        broker_connected,
        circuit,
        budget,
        access: access(&settings.admin),
        amqp: settings.amqp.clone(),
        signin,
        secure_cookies: settings.admin.tls_cert_file.is_some()
            || settings
                .admin
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://")),
        sync_deadline: settings.worker.sync_deadline,
        trusted_proxies: Arc::new(settings.admin.proxies().unwrap_or_default()),
    }
}

/// The API's tokens: `admin.token` as an operator token, then `[[admin.tokens]]`.
fn access(a: &crate::config::Admin) -> Access {
    let shared = a.token.iter().map(|secret| Token {
        name: a.token_name.clone(),
        secret: secret.clone(),
        can_act: true,
    });
    let named = a.tokens.iter().filter_map(|t| {
        Some(Token {
            name: t.name.clone(),
            secret: t.token.clone()?,
            can_act: t.role == crate::config::TokenRole::Operator,
        })
    });
    Access::new(shared.chain(named).collect(), a.open_reads)
}

/// AD sign-in for the dashboard, from `[admin]` (off without groups or a directory), its
/// limit on failures kept below AD's lockout policy.
async fn signin(settings: &Settings, directory: Option<Directory>, store: &Store) -> SignIn {
    let a = &settings.admin;
    let domain = if a.domain.is_empty() {
        crate::signin::domain_of(&settings.ldap.base_dn)
    } else {
        a.domain.clone()
    };
    let mut signin = SignIn::new(
        directory,
        store.clone(),
        SignInConfig {
            viewer_groups: a.viewer_groups.clone(),
            operator_groups: a.operator_groups.clone(),
            domain,
            limits: crate::store::SessionLimits {
                idle: a.session_idle,
                lifetime: a.session_lifetime,
            },
            group_check_interval: a.group_check_interval,
            failures: crate::signin::FailureLimits::default(),
        },
    );
    if signin.enabled() {
        signin.adopt_lockout_policy().await;
    }
    signin
}

/// Binds the admin listener and serves the API and the dashboard on it until shutdown,
/// over HTTPS when `admin.tls_cert_file` is set, every request through `admin_guard`.
async fn serve_admin(
    settings: &crate::config::Admin,
    state: AdminState,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listen = &settings.listen;
    let (listener, addr) = admin::bind(listen)
        .await
        .with_context(|| format!("binding admin.listen {listen}"))?;
    let tls = settings.tls_cert_file.is_some() && settings.tls_key_file.is_some();
    let guard = crate::admin_guard::Guard {
        trusted_proxies: state.trusted_proxies.clone(),
        tls,
        public_origin: settings.public_url.as_deref().and_then(origin_of),
    };
    let router = admin::router(state.clone())
        .merge(dashboard::router(state))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            crate::admin_guard::guard,
        ));
    let limits = crate::admin_serve::Limits {
        header_read_timeout: settings.header_read_timeout,
        request_timeout: REQUEST_TIMEOUT,
        max_connections: settings.max_connections,
    };
    let task = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = crate::admin_tls::TlsListener::start(
                listener,
                cert,
                key,
                settings.max_connections,
                shutdown.clone(),
            )?;
            tokio::spawn(crate::admin_serve::serve(tls, router, limits, shutdown))
        }
        _ => tokio::spawn(crate::admin_serve::serve(
            listener, router, limits, shutdown,
        )),
    };
    Ok((addr, task))
}

/// A whole admin request (a slow body included) is abandoned after this: the slowest
/// handler is a bulk action over 10 000 jobs, well within it.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `https://host[:port]` of a URL, as browsers write `Origin`.
fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(u.origin().ascii_serialization()).filter(|o| o != "null")
}
