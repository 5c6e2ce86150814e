//! Wires the parts into the daemon (`mailboxd run`): the store, the clients built from their
//! configuration sections, then the background services — intake, claim loops, pruning, alert
//! sender, outcome publisher, IdentityIQ delivery, reconcile schedule — and the admin listener
//! with the API and the dashboard on it. Every service has the same shape,
//! `spawn(Deps, Shutdown) -> JoinHandle<()>`, and runs under `health::supervise`; `App` owns
//! the one `Stop`. The parts do not know each other's wiring; it is all here.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::{Access, Token};
use crate::admin::AdminState;
use crate::budget::SessionBudget;
use crate::circuit::Circuit;
use crate::config::Settings;
use crate::directory::Directory;
use crate::exchange::Exchange;
use crate::health::Health;
use crate::shutdown::{Shutdown, Stop};
use crate::signin::{SignIn, SignInConfig};
use crate::store::{CallbackDue, Store};
use crate::{
    admin, alert, cloud, dashboard, http_intake, identityiq, intake, outcome_callback,
    outcome_http, outcome_publisher, reconcile, worker,
};

/// A running daemon.
pub struct App {
    pub admin_addr: SocketAddr,
    /// Where the HTTP intake listens, when `http_intake.listen` is set.
    pub http_intake_addr: Option<SocketAddr>,
    pub store: Store,
    pub replica: String,
    stop: Stop,
    tasks: Vec<JoinHandle<()>>,
    grace: std::time::Duration,
    /// Its warm processes are ended at shutdown.
    exchange: Exchange,
}

impl App {
    /// Connects, migrates and starts every part. Returns once the admin listener is bound.
    pub async fn start(settings: Settings) -> anyhow::Result<App> {
        crate::metrics::handle();
        let store = store(&settings).await?;
        let budget = SessionBudget::from_config(&store, &settings.exchange)
            .await
            .context("setting up the Exchange session budget")?;
        let exchange = exchange(&settings)?.with_budget(budget.clone());
        let directory = Directory::from_config(&settings.ldap)?;
        let graph = crate::graph::GraphClient::from_config(&settings.graph)
            .context("setting up the Microsoft Graph client ([graph])")?
            .map(Arc::new);
        let signin = signin(&settings, directory.clone(), &store).await;
        let replica = crate::replica_name().to_owned();
        let circuit = circuit(&settings.worker);
        let health = Health::new(settings.amqp.stall_after);
        let (connected, broker_connected) = watch::channel(false);
        let (stop, shutdown) = Shutdown::new();

        // The background services, each supervised, in the order data flows.
        let (s, st, h) = (&settings, &store, &health);
        let parts = (
            exchange.clone(),
            circuit.clone(),
            budget.clone(),
            directory.clone(),
            graph.clone(),
        );
        let claim_loops = claim_loops(s, st, h, parts)?;
        let iiq = identityiq_delivery(s, st, h)?;
        let callback = callback_delivery(s, st, h)?;
        let mut tasks = vec![
            intake::spawn(intake_deps(s, st, h, connected), shutdown.clone()),
            worker::claim::spawn(claim_loops, shutdown.clone()),
            worker::prune::spawn(pruning(s, st, h), shutdown.clone()),
            worker::rescue::spawn(lease_rescue(st, h), shutdown.clone()),
            alert::sender::spawn(alert_sending(s, st, h), shutdown.clone()),
            outcome_publisher::spawn(publishing(s, st, h), shutdown.clone()),
        ];
        if let Some(deps) = iiq {
            tasks.push(outcome_http::spawn(deps, shutdown.clone()));
        }
        if let Some(deps) = callback {
            tasks.push(outcome_http::spawn(deps, shutdown.clone()));
        }
        if let Some(deps) = cloud_watch(s, st, h, (directory.clone(), graph))? {
            tasks.push(cloud::spawn(deps, shutdown.clone()));
        }
        if let Some(deps) = reconcile_schedule(s, st, h, directory) {
            tasks.push(reconcile::schedule::spawn(deps, shutdown.clone()));
        }
        let http_intake_addr = match serve_http_intake(s, st, shutdown.clone()).await? {
            Some((addr, task)) => {
                tasks.push(task);
                Some(addr)
            }
            None => None,
        };
        let state = admin_state(s, st, (broker_connected, health, circuit, budget), signin);
        let (admin_addr, admin) = serve_admin(&settings.admin, state, shutdown).await?;
        tasks.push(admin);
        tracing::info!(%admin_addr, replica = %replica, "mailboxd running");
        Ok(App {
            admin_addr,
            http_intake_addr,
            store,
            replica,
            stop,
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
        self.stop.stop();
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
        self.stop.stop();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The store from `[database]`, migrated; it records outcomes for IdentityIQ when
/// `identityiq.base_url` is set, and for the callback those `[outcome_callback]` names.
async fn store(settings: &Settings) -> anyhow::Result<Store> {
    let db = &settings.database;
    let store = Store::connect(&db.url, db.max_connections)
        .await
        .context("connecting to PostgreSQL")?
        .delivering_to_identityiq(settings.identityiq.base_url.is_some())
        .delivering_to_callback(callback_due(settings))
        .watching_the_cloud(watch_policy(&settings.cloud));
    store.migrate().await.context("migrating the database")?;
    if let Ok(false) = store.autovacuum_on().await {
        tracing::warn!("{}", crate::store::AUTOVACUUM_OFF);
    }
    Ok(store)
}

/// The circuit breaker from `[worker]`: refused credentials pause it for at least
/// `credential_probe_interval` (AD's lockout window).
fn circuit(cfg: &crate::config::Worker) -> Arc<Circuit> {
    Arc::new(
        Circuit::new(cfg.circuit_threshold, cfg.circuit_cooldown)
            .with_credential_floor(cfg.credential_probe_interval),
    )
}

/// The HTTP intake on its own listener, when `http_intake.listen` is set: the same
/// decoding rules as the broker's intake (`[amqp]`'s allow-lists and attribute maps).
async fn serve_http_intake(
    s: &Settings,
    store: &Store,
    shutdown: Shutdown,
) -> anyhow::Result<Option<(SocketAddr, JoinHandle<()>)>> {
    let rules = crate::event::IntakeRules {
        isc: crate::event::isc::IscRules {
            ad_sources: s.http_intake.isc_ad_sources.clone(),
        },
        ..intake::event_rules(&s.amqp)
    };
    let state =
        http_intake::HttpIntake::new(&s.http_intake, store.clone(), rules, s.worker.max_attempts);
    http_intake::start(&s.http_intake, state, shutdown).await
}

/// Intake, reporting its broker link on `connected` (what `/readyz` reads).
fn intake_deps(
    s: &Settings,
    store: &Store,
    health: &Arc<Health>,
    connected: watch::Sender<bool>,
) -> intake::Deps {
    intake::Deps {
        amqp: s.amqp.clone(),
        store: store.clone(),
        max_attempts: s.worker.max_attempts,
        report: intake::Reporting {
            connected,
            health: health.clone(),
        },
    }
}

/// What the claim loops share: the Exchange side, the circuit, the session budget and the
/// directory (`None`: Exchange's answers are trusted).
type WorkerParts = (
    Exchange,
    Arc<Circuit>,
    Arc<SessionBudget>,
    Option<Directory>,
    Option<Arc<crate::graph::GraphClient>>,
);

/// The claim loops' worker from `[worker]`, `[exchange]` and `[ldap]`; the batch size is
/// the configured one unless the cmdlet budget allows fewer accounts per batch.
fn claim_loops(
    s: &Settings,
    store: &Store,
    health: &Arc<Health>,
    (exchange, circuit, budget, directory, graph): WorkerParts,
) -> anyhow::Result<worker::claim::Deps> {
    let batch_size = budget.batch_size(s.exchange.batch_size, exchange.session_cmdlets())?;
    let worker = worker::Worker {
        store: store.clone(),
        exchange,
        cfg: s.worker.clone(),
        batch_size,
        batch_linger: s.exchange.batch_linger,
        remote_routing_domain: s.exchange.remote_routing_domain.clone(),
        replica: crate::replica_name().to_owned(),
        circuit,
        directory,
        require_cloud_sync: s.ldap.require_cloud_sync,
        leaver: s.leaver,
        joiner: s.joiner.start_of_day()?,
        budget,
        graph,
    };
    Ok(worker::claim::Deps {
        worker,
        health: health.clone(),
    })
}

fn pruning(s: &Settings, store: &Store, health: &Arc<Health>) -> worker::prune::Deps {
    worker::prune::Deps {
        store: store.clone(),
        retention: s.worker.retention,
        health: health.clone(),
    }
}

fn lease_rescue(store: &Store, health: &Arc<Health>) -> worker::rescue::Deps {
    worker::rescue::Deps {
        store: store.clone(),
        health: health.clone(),
    }
}

fn alert_sending(s: &Settings, store: &Store, health: &Arc<Health>) -> alert::sender::Deps {
    alert::sender::Deps {
        store: store.clone(),
        smtp: s.smtp.clone(),
        public_url: s.admin.public_url.clone(),
        health: health.clone(),
    }
}

fn publishing(s: &Settings, store: &Store, health: &Arc<Health>) -> outcome_publisher::Deps {
    outcome_publisher::Deps {
        store: store.clone(),
        amqp: s.amqp.clone(),
        cfg: s.outcomes.clone(),
        health: health.clone(),
    }
}

/// IdentityIQ delivery, when `identityiq.base_url` is set.
fn identityiq_delivery(
    s: &Settings,
    store: &Store,
    health: &Arc<Health>,
) -> anyhow::Result<Option<outcome_http::Deps<identityiq::Client>>> {
    let client = identityiq::Client::from_config(&s.identityiq)?;
    Ok(client.map(|c| http_channel(s, store, health, c)))
}

/// The outcome callback's delivery, when `outcome_callback.url` is set.
fn callback_delivery(
    s: &Settings,
    store: &Store,
    health: &Arc<Health>,
) -> anyhow::Result<Option<outcome_http::Deps<outcome_callback::Client>>> {
    let client = outcome_callback::Client::from_config(&s.outcome_callback)?;
    Ok(client.map(|c| http_channel(s, store, health, c)))
}

fn http_channel<C>(
    s: &Settings,
    store: &Store,
    health: &Arc<Health>,
    client: C,
) -> outcome_http::Deps<C> {
    outcome_http::Deps {
        store: store.clone(),
        client,
        cfg: s.outcomes.clone(),
        health: health.clone(),
    }
}

/// Which outcomes the callback is sent (`[outcome_callback]`), as the store records them.
pub(crate) fn callback_due(settings: &Settings) -> CallbackDue {
    let cb = &settings.outcome_callback;
    match (&cb.url, cb.outcomes) {
        (None, _) => CallbackDue::Off,
        (Some(_), crate::config::CallbackOutcomes::HttpIntake) => CallbackDue::HttpIntake,
        (Some(_), crate::config::CallbackOutcomes::All) => CallbackDue::All,
    }
}

/// The reconcile schedule, when `reconcile.interval` is set and there is a directory.
/// What a joiner's success writes for the cloud confirmation, when `[cloud]` confirms.
fn watch_policy(c: &crate::config::Cloud) -> Option<crate::store::WatchPolicy> {
    let source = match c.confirm {
        crate::config::CloudConfirmation::Off => return None,
        crate::config::CloudConfirmation::Directory => crate::outcome::CloudSourceName::Directory,
        crate::config::CloudConfirmation::Graph => crate::outcome::CloudSourceName::Graph,
    };
    Some(crate::store::WatchPolicy {
        source,
        first_check: c.poll_interval,
        deadline: c.deadline,
    })
}

/// The cloud confirmation's service, when `[cloud]` confirms; AD's way needs `[ldap]`,
/// Graph's `[graph]` and `[ldap]` (the object IDs Entra wrote back).
fn cloud_watch(
    s: &Settings,
    store: &Store,
    health: &Arc<Health>,
    (directory, graph): (Option<Directory>, Option<Arc<crate::graph::GraphClient>>),
) -> anyhow::Result<Option<cloud::Deps>> {
    let source = match s.cloud.confirm {
        crate::config::CloudConfirmation::Off => return Ok(None),
        crate::config::CloudConfirmation::Directory => cloud::CloudSource::Directory(
            directory.context("cloud.confirm = \"directory\" reads AD: configure [ldap]")?,
        ),
        crate::config::CloudConfirmation::Graph => cloud::CloudSource::Graph(cloud::GraphSource {
            directory: directory.context(
                "cloud.confirm = \"graph\" finds each user's Entra object ID in AD: configure [ldap]",
            )?,
            client: graph.context("cloud.confirm = \"graph\" reads Microsoft Graph: configure [graph]")?,
        }),
    };
    Ok(Some(cloud::Deps {
        store: store.clone(),
        source,
        settings: s.cloud.clone(),
        replica: crate::replica_name().to_owned(),
        health: health.clone(),
    }))
}

fn reconcile_schedule(
    s: &Settings,
    store: &Store,
    health: &Arc<Health>,
    directory: Option<Directory>,
) -> Option<reconcile::schedule::Deps> {
    Some(reconcile::schedule::Deps {
        directory: directory?,
        cfg: s.reconcile.clone(),
        leaver: s.leaver,
        interval: s.reconcile.interval?,
        store: store.clone(),
        max_attempts: s.worker.max_attempts,
        health: health.clone(),
    })
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
    let client = settings.winrm.client()?;
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
    Arc<SessionBudget>,
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
            can_act: t.role == crate::access::Role::Operator,
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
    shutdown: Shutdown,
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
