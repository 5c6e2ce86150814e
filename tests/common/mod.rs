//! Shared test helpers: each test gets a fresh PostgreSQL database, its own RabbitMQ
//! exchange and queues, and its own lab on random ports, then starts the real daemon
//! (in-process, or as the binary when the test needs to kill it).
//!
//! Everything a test starts is removed when the test ends, however it ends: the database
//! and the broker names are guards (`scratch`), the lab stops its listeners when dropped,
//! an in-process `App` ends its tasks when dropped, and a spawned daemon is killed when its
//! handle is dropped. No test calls a cleanup by hand.

#![allow(dead_code)]

pub mod ad;
pub mod callback;
pub mod daemon;
pub mod echo_host;
pub mod graph;
pub mod identityiq;
pub mod outcomes;
pub mod schema;
pub mod scratch;
pub mod signin;
pub mod smtp;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab::{self, AccountSeed, Lab, LabAccount, LabConfig};
use mailboxd::app::App;
use mailboxd::config::{Amqp, CloudConfirmation, Settings};
use mailboxd::event::{Draft, DraftAccount, Event, EventKind};
use mailboxd::job::JobState;
use mailboxd::publish::{EventSpec, Publisher};
use mailboxd::store::{Job, PoisonMessage, Store};
use secrecy::SecretString;
use serde_json::Value;

// Each test crate uses its own part of these.
#[allow(unused_imports)]
pub use daemon::{Daemon, KillOnDrop, descendants, process_command_lines, wait_exit};
pub use scratch::{TestBroker, TestDatabase};

pub const LAB_PASSWORD: &str = "lab-pass-for-tests";

pub fn pg_server() -> String {
    std::env::var("MAILBOXD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("MAILBOXD_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Twelve hex digits that name one test's database and broker objects.
pub fn fresh_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

pub fn seed(sam: &str) -> AccountSeed {
    AccountSeed::user(sam)
}

/// A user with an on-premises mailbox: a joiner for it fails for good.
pub fn onprem(sam: &str) -> AccountSeed {
    AccountSeed::onprem(sam)
}

/// A user with a remote mailbox: `remote("gone").disabled()`, `remote("back").hidden()`.
pub fn remote(sam: &str) -> AccountSeed {
    AccountSeed::remote(sam)
}

/// A lab on a random loopback port, accepting `DEFAULT_USER` / `LAB_PASSWORD`.
pub async fn start_lab(
    accounts: Vec<AccountSeed>,
    latency: lab::Latency,
    max_shells: usize,
) -> Lab {
    let cfg = lab_config(accounts)
        .with_latency(latency)
        .with_max_shells_per_user(max_shells);
    Lab::start(cfg).await.expect("lab starts")
}

/// The test lab's configuration: random ports, `DEFAULT_USER` / `LAB_PASSWORD`, a DC.
pub fn lab_config(accounts: Vec<AccountSeed>) -> LabConfig {
    LabConfig::loopback(SecretString::from(LAB_PASSWORD)).with_accounts(accounts)
}

/// This test's broker names: `test.<tag>.…`, expiring if a cleanup is ever missed.
fn test_amqp(tag: &str) -> Amqp {
    Amqp {
        url: amqp_url(),
        exchange: format!("test.{tag}.events"),
        queue: format!("test.{tag}.jobs"),
        dead_letter_exchange: format!("test.{tag}.dlx"),
        queue_expires: Some(Duration::from_secs(300)),
        ..Amqp::default()
    }
}

/// One test's world: database, broker names, lab, settings for the daemon. Dropping it
/// stops the lab, drops the database and deletes the broker names.
pub struct TestEnv {
    pub settings: Settings,
    pub lab: Lab,
    pub store: Store,
    pub http: reqwest::Client,
    pub tag: String,
    /// The password the lab's WinRM endpoint accepts (what the daemon is given).
    pub winrm_password: String,
    // Declared last, so dropped last: after the lab, with nothing of the test left using them.
    database: TestDatabase,
    broker: TestBroker,
}

impl TestEnv {
    pub async fn new(accounts: Vec<AccountSeed>) -> TestEnv {
        TestEnv::with_latency(accounts, lab::Latency::default()).await
    }

    /// A lab that charges `latency` for the Exchange session and each cmdlet.
    pub async fn with_latency(accounts: Vec<AccountSeed>, latency: lab::Latency) -> TestEnv {
        TestEnv::with_lab(lab_config(accounts).with_latency(latency)).await
    }

    /// A lab configured by the test (throttling, faults from the start…).
    pub async fn with_lab(cfg: LabConfig) -> TestEnv {
        use secrecy::ExposeSecret;
        winrm::tls::install_provider();
        let winrm_password = cfg.password.expose_secret().to_owned();
        let ldap_password = cfg.ldap_password.clone().unwrap_or(cfg.password.clone());
        let tag = fresh_tag();
        let lab = Lab::start(cfg).await.expect("lab starts");
        let broker = TestBroker {
            amqp: test_amqp(&tag),
        };
        let database = TestDatabase::create(&tag).await;
        let mut s = Settings::default();
        s.database.url = database.url.clone();
        s.amqp = broker.amqp.clone();
        // As a real deployment with a domain account: NTLM, remote mode ("none" finds no
        // Exchange cmdlets), the second hop answered by an explicit Exchange credential.
        mailboxd::tools::lab_setup::point_at_lab(
            &mut s,
            &lab,
            SecretString::from(winrm_password.clone()),
            ldap_password.clone(),
        );
        s.exchange.batch_linger = Duration::ZERO;
        // Directory checks against the lab's domain controller, as a deployment does against AD.
        s.ldap = mailboxd::tools::lab_setup::ldap_settings(&lab, lab::DEFAULT_USER, ldap_password)
            .expect("the test lab serves LDAP");
        s.worker.backoff_base = Duration::from_millis(200);
        s.worker.backoff_cap = Duration::from_secs(1);
        s.worker.poll_interval = Duration::from_millis(200);
        s.worker.lease = Duration::from_secs(30);
        s.admin.listen = "127.0.0.1:0".into();
        TestEnv {
            settings: s,
            lab,
            store: database.store.clone(),
            http: reqwest::Client::new(),
            tag,
            winrm_password,
            database,
            broker,
        }
    }

    /// The name of this test's database (dropped with the `TestEnv`).
    pub fn database_name(&self) -> &str {
        &self.database.name
    }

    /// The daemon in this process; it ends its tasks if dropped without `stop`.
    pub async fn start_daemon(&self) -> App {
        App::start(self.settings.clone())
            .await
            .expect("daemon starts")
    }

    /// The environment that configures the `mailboxd` binary like `self.settings`.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        daemon::daemon_env(&self.settings, &self.winrm_password)
    }

    /// Starts `mailboxd run` as a child process with `args` (e.g. `--log-format json`) and
    /// exactly the environment `env` (start from `daemon_env()`), its stdout and stderr kept
    /// in files, the admin listener on a free port; returns once `/healthz` answers (or the
    /// process has exited: a refusal to start). Killed when the `Daemon` is dropped.
    pub async fn spawn_logged(&self, args: &[&str], env: Vec<(String, String)>) -> Daemon {
        let logs = tempfile::tempdir().expect("a directory for the daemon's logs");
        let admin = format!("127.0.0.1:{}", free_port());
        let out = std::fs::File::create(logs.path().join("stdout")).expect("stdout file");
        let err = std::fs::File::create(logs.path().join("stderr")).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_mailboxd"))
            .arg("run")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .env("MAILBOXD__ADMIN__LISTEN", &admin)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn mailboxd");
        let mut daemon = Daemon {
            child: KillOnDrop(child),
            admin,
            logs,
            exited: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                daemon.exited = Some(status);
                return daemon;
            }
            let healthy = self
                .http
                .get(format!("http://{}/healthz", daemon.admin))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon neither answered /healthz nor exited within 60 s: {}",
                daemon.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every value of every text-like column (text, varchar, json/jsonb, arrays, enums,
    /// bytea read as text) of every table in this test's database, as `(table.column,
    /// value)`. Read from `information_schema`, so tables added later are covered too.
    pub async fn database_text(&self) -> Vec<(String, String)> {
        let pool = self.store.pool();
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text
               FROM information_schema.columns
              WHERE table_schema = current_schema()
                AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb',
                                  'ARRAY', 'USER-DEFINED', 'bytea', 'xml', 'name')
              ORDER BY table_name, ordinal_position",
        )
        .fetch_all(pool)
        .await
        .expect("information_schema answers");
        assert!(
            columns.iter().any(|(t, _, _)| t == "jobs"),
            "no jobs table among {columns:?}"
        );
        let mut values = Vec::new();
        for (table, column, ty) in columns {
            let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let expr = if ty == "bytea" {
                format!("encode({}, 'escape')", q(&column))
            } else {
                format!("{}::text", q(&column))
            };
            let sql = format!(
                "SELECT {expr} FROM {} WHERE {} IS NOT NULL",
                q(&table),
                q(&column)
            );
            // Identifiers from information_schema, quoted: no outside input.
            let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .fetch_all(pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            for (v,) in rows {
                values.push((format!("{table}.{column}"), v));
            }
        }
        values
    }

    /// Starts `mailboxd run` as a child process, killed when the handle is dropped.
    pub fn spawn_daemon(&self, extra_env: &[(&str, &str)]) -> KillOnDrop {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailboxd"));
        cmd.arg("run")
            .envs(self.daemon_env())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        KillOnDrop(cmd.spawn().expect("spawn mailboxd"))
    }

    /// Runs a CLI command of the binary against this environment; returns stdout.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        self.cli_with(args, &[])
    }

    /// The same with settings of its own (`MAILBOXD__…` variables) on top.
    pub fn cli_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_mailboxd"))
            .args(args)
            .envs(self.daemon_env())
            .envs(extra_env.iter().copied())
            .output()
            .expect("run mailboxd");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn publisher(&self) -> Publisher {
        Publisher::connect(&self.settings.amqp)
            .await
            .expect("publisher connects")
    }

    pub fn joiner(&self, sam: &str) -> EventSpec {
        EventSpec::new(EventKind::Joiner, sam)
    }

    pub fn leaver(&self, sam: &str) -> EventSpec {
        EventSpec::new(EventKind::Leaver, sam)
    }

    /// Waits (bounded) until the job for `event_id` satisfies `done`.
    pub async fn wait_job(&self, event_id: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(job) = self.store.job_by_event(event_id).await.expect("query") {
                if done(&job) {
                    return job;
                }
                assert!(
                    Instant::now() < deadline,
                    "job for {event_id} still {:?} after 30 s: {job:?}",
                    job.state
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "no job for event {event_id} after 30 s"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until job `id` has `attempts` attempts on record and has ended: an
    /// operator's retry ran.
    pub async fn wait_attempts(&self, id: uuid::Uuid, attempts: usize) -> Job {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (job, done) = self.store.get_job(id).await.expect("query").expect("job");
            if done.len() == attempts && job.state.is_terminal() {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} has {} attempt(s), not {attempts}, after 30 s: {job:?}",
                done.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) for the poison row whose AMQP message id is `message_id`.
    pub async fn wait_poison(&self, message_id: &str) -> PoisonMessage {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.store.list_poison(100).await.expect("poison list");
            if let Some(p) = rows
                .into_iter()
                .find(|p| p.message_id.as_deref() == Some(message_id))
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "no poison message {message_id:?} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_terminal(&self, event_id: &str) -> Job {
        self.wait_job(event_id, |j| j.state.is_terminal()).await
    }

    pub async fn wait_succeeded(&self, event_id: &str) -> Job {
        let job = self.wait_terminal(event_id).await;
        assert_eq!(job.state, JobState::Succeeded, "job: {job:?}");
        job
    }

    /// Confirms joiners in the cloud by `confirm`, checking every 200–500 ms, failing them
    /// at `deadline`.
    pub fn confirm_in_cloud(&mut self, confirm: CloudConfirmation, deadline: Duration) {
        let c = &mut self.settings.cloud;
        c.confirm = confirm;
        c.deadline = deadline;
        c.poll_interval = Duration::from_millis(200);
        c.poll_cap = Duration::from_millis(500);
        c.lease = Duration::from_secs(1);
    }

    /// Publishes a joiner for each of `sams`, one after the other, each until it succeeded.
    pub async fn joiners_succeeded(&self, sams: &[&str]) -> Vec<Job> {
        let publisher = self.publisher().await;
        let mut jobs = Vec::new();
        for sam in sams {
            let ev = self.joiner(sam);
            publisher.publish(&ev).await.expect("published");
            jobs.push(self.wait_succeeded(&ev.id).await);
        }
        jobs
    }

    /// GET `url` and read its JSON body.
    pub async fn get_json(&self, url: &str) -> Value {
        self.http
            .get(url)
            .send()
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON")
    }

    /// Waits (bounded) until the daemon's `/readyz` reports the circuit open; returns it.
    pub async fn wait_circuit_open(&self, app: &App) -> Value {
        let readyz = format!("http://{}/readyz", app.admin_addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get_json(&readyz).await;
            if v["circuit"]["open"] == true {
                return v;
            }
            assert!(Instant::now() < deadline, "circuit never opened: {v}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `POST /lab/faults`: one call switches a fault on, through the lab's HTTP API (as an
    /// operator's `curl` does; `self.lab.set_fault` is the typed way in-process).
    pub async fn fault(&self, body: Value) -> Value {
        let r = self
            .http
            .post(format!("http://{}/lab/faults", self.lab.addr))
            .json(&body)
            .send()
            .await
            .expect("lab answers");
        assert!(
            r.status().is_success(),
            "fault {body} refused: {}",
            r.status()
        );
        r.json().await.expect("lab JSON")
    }

    /// The lab's account `sam` as it is now, with the attributes Exchange wrote.
    pub fn mailbox(&self, sam: &str) -> LabAccount {
        self.lab
            .account(sam)
            .unwrap_or_else(|| panic!("lab has no account {sam}"))
    }

    /// Turns outcome messages on for this test's daemon (`test.<tag>.outcomes`, quick
    /// retries) and returns the IAM system's queue bound to that exchange.
    pub async fn expect_outcomes(&mut self) -> outcomes::OutcomeQueue {
        let exchange = format!("test.{}.outcomes", self.tag);
        self.settings.outcomes.exchange = Some(exchange.clone());
        self.settings.outcomes.poll_interval = Duration::from_millis(100);
        self.settings.outcomes.retry_base = Duration::from_millis(200);
        self.settings.outcomes.retry_cap = Duration::from_secs(1);
        outcomes::OutcomeQueue::bound_to(&self.settings.amqp.url, &exchange).await
    }

    /// Points the daemon at an IdentityIQ stand-in (Basic as `spadmin`), launching
    /// `mailboxd Outcome`; returns the stand-in, answering `refuse` if given.
    pub async fn expect_identityiq(
        &mut self,
        refuse: Option<u16>,
    ) -> identityiq::IdentityIqStandIn {
        use base64::Engine;
        let password = format!("iiq-{}", self.tag);
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("spadmin:{password}"));
        let iiq = identityiq::IdentityIqStandIn::start(
            &format!("Basic {basic}"),
            "mailboxd Outcome",
            refuse,
        )
        .await;
        let cfg = &mut self.settings.identityiq;
        cfg.base_url = Some(iiq.base_url.clone());
        cfg.username = Some("spadmin".into());
        cfg.credential = Some(SecretString::from(password));
        cfg.allow_plaintext = true;
        self.settings.outcomes.poll_interval = Duration::from_millis(100);
        self.settings.outcomes.retry_base = Duration::from_millis(200);
        self.settings.outcomes.retry_cap = Duration::from_secs(1);
        iiq
    }

    /// Kept for tests written before the guards: dropping the `TestEnv` does all of it.
    pub async fn cleanup(self) {
        drop(self);
    }
}

/// A free TCP port on loopback (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// An HTTP client for tests (with the process's TLS provider installed).
pub fn http() -> reqwest::Client {
    winrm::tls::install_provider();
    reqwest::Client::new()
}

/// One account of a batch as the worker hands it to the Exchange client: a joiner for
/// `identity` with the tenant's routing address, on the lab's DC.
/// A WinRM client's settings for the test lab: `DEFAULT_USER` / `LAB_PASSWORD` over `auth`,
/// the lab's CredSSP certificate pinned.
pub fn lab_client_config(lab: &Lab, auth: winrm::Auth) -> winrm::ClientConfig {
    let mut cfg = winrm::ClientConfig::new(
        lab.endpoint().parse().unwrap(),
        lab::DEFAULT_USER,
        SecretString::from(LAB_PASSWORD),
    );
    cfg.auth = auth;
    cfg.credssp_cert_sha256 = lab.credssp_cert_sha256.iter().cloned().collect();
    cfg
}

pub fn account_data(identity: &str) -> mailboxd::exchange::AccountData {
    mailboxd::exchange::AccountData {
        job_id: uuid::Uuid::new_v4(),
        identity: identity.into(),
        sam_account_name: identity.into(),
        domain_controller: Some("dc1.corp.example".into()),
        remote_routing_address: Some(format!("{identity}@tenant.mail.onmicrosoft.com")),
        alias: None,
        primary_smtp_address: None,
        archive: false,
        ..mailboxd::exchange::AccountData::default()
    }
}

/// Held while a test scrapes an in-process daemon's `/metrics`. In-process daemons share the
/// process's one metrics recorder, and a scrape first sets the queue gauges from its own
/// database: two scrapes at once in one test binary could each render the other's numbers.
pub static METRICS_SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `n` joiners with the event ids `e0`, `e1`, … for the accounts `name(0)`, `name(1)`, …,
/// occurring now and validated as intake validates them: jobs for a store-level story.
pub fn joiners(n: usize, name: impl Fn(usize) -> String) -> Vec<Event> {
    (0..n)
        .map(|i| {
            Draft {
                id: format!("e{i}"),
                kind: EventKind::Joiner,
                occurred_at: chrono::Utc::now(),
                account: DraftAccount {
                    sam_account_name: Some(name(i)),
                    ..DraftAccount::default()
                },
                mailbox: None,
                source: None,
                identity: None,
                rename: None,
            }
            .validate(chrono::Utc::now())
            .expect("a valid joiner")
        })
        .collect()
}

/// The event `id` of `kind` for `sam`, occurring at 10:`minute` on a fixed day (so a test
/// orders events by the minute it gives), validated as intake validates it.
/// Publishes `ev` to the daemon's exchange on its routing key, with `props` (what an IAM
/// sender sets: content type, reply_to, a traceparent header), waiting for the confirm.
pub async fn publish_with(env: &TestEnv, ev: &EventSpec, props: lapin::BasicProperties) {
    let conn = mailboxd::broker::connect(&env.settings.amqp.url, "test IAM sender")
        .await
        .expect("RabbitMQ answers");
    let ch = conn.create_channel().await.expect("a channel");
    ch.basic_publish(
        env.settings.amqp.exchange.as_str().into(),
        ev.kind.routing_key().into(),
        lapin::options::BasicPublishOptions::default(),
        ev.to_json().to_string().as_bytes(),
        props,
    )
    .await
    .expect("published")
    .await
    .expect("confirmed");
    let _ = conn.close(200, "published".into()).await;
}

pub fn event_at(id: &str, kind: EventKind, sam: &str, minute: u32) -> Event {
    use chrono::TimeZone;
    Draft {
        id: id.into(),
        kind,
        occurred_at: chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 10, minute, 0)
            .unwrap(),
        account: DraftAccount {
            sam_account_name: Some(sam.into()),
            ..DraftAccount::default()
        },
        mailbox: None,
        source: Some("test".into()),
        identity: None,
        rename: None,
    }
    .validate(chrono::Utc::now())
    .expect("a valid event")
}

/// The HTTP intake on HTTPS for `env`: listening on `listen`, a fresh self-signed certificate
/// for 127.0.0.1 written to `dir`, `token` as its bearer token. Returns the certificate, for
/// a client that trusts it.
pub fn http_intake_over_https(
    env: &mut TestEnv,
    dir: &std::path::Path,
    listen: String,
    token: &str,
) -> rcgen::Certificate {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("rcgen");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, c.cert.pem()).unwrap();
    std::fs::write(&key_path, c.signing_key.serialize_pem()).unwrap();
    let h = &mut env.settings.http_intake;
    h.listen = Some(listen);
    (h.tls_cert_file, h.tls_key_file) = (Some(cert_path), Some(key_path));
    h.token = Some(SecretString::from(token));
    c.cert
}
