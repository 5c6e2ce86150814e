//! Shared test helpers: each test gets a fresh PostgreSQL database, its own RabbitMQ
//! exchange and queues, and its own lab on a random port, then starts the real daemon
//! (in-process, or as the binary when the test needs to kill it).

#![allow(dead_code)]

pub mod ad;
pub mod echo_host;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailboxd::app::App;
use mailboxd::config::{ExchangeMode, Settings};
use mailboxd::event::EventKind;
use mailboxd::lab::{self, AccountSeed, Lab, LabConfig};
use mailboxd::publish::{EventSpec, Publisher};
use mailboxd::store::{Job, JobState, Store};
use secrecy::SecretString;
use serde_json::Value;

pub const LAB_PASSWORD: &str = "lab-pass-for-tests";

pub fn pg_server() -> String {
    std::env::var("MAILBOXD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("MAILBOXD_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn seed(sam: &str) -> AccountSeed {
    AccountSeed::user(sam)
}

pub fn remote(sam: &str, disabled: bool, hidden: bool) -> AccountSeed {
    AccountSeed::remote(sam, disabled, hidden)
}

/// A lab on a random loopback port, accepting `DEFAULT_USER` / `LAB_PASSWORD`.
pub async fn start_lab(
    accounts: Vec<AccountSeed>,
    latency: lab::Latency,
    max_shells: usize,
) -> Lab {
    let mut cfg = lab_config(accounts);
    cfg.latency = latency;
    cfg.max_shells_per_user = max_shells;
    Lab::start(cfg).await.expect("lab starts")
}

/// The test lab's configuration: random ports, `DEFAULT_USER` / `LAB_PASSWORD`, a DC.
pub fn lab_config(accounts: Vec<AccountSeed>) -> LabConfig {
    LabConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        user: lab::DEFAULT_USER.into(),
        password: SecretString::from(LAB_PASSWORD),
        accounts,
        latency: lab::Latency::default(),
        max_shells_per_user: 30,
        ldap_listen: Some(([127, 0, 0, 1], 0).into()),
        throttle: Default::default(),
        faults: Vec::new(),
        max_envelope_kb: 500,
        tls_listen: None,
        tls_cert_out: None,
        cbt_hardening: Default::default(),
    }
}

/// One test's world: database, broker names, lab, settings for the daemon.
pub struct TestEnv {
    pub settings: Settings,
    pub lab: Lab,
    pub store: Store,
    pub http: reqwest::Client,
    pub tag: String,
}

impl TestEnv {
    pub async fn new(accounts: Vec<AccountSeed>) -> TestEnv {
        TestEnv::with_latency(accounts, lab::Latency::default()).await
    }

    /// A lab that charges `latency` for the Exchange session and each cmdlet.
    pub async fn with_latency(accounts: Vec<AccountSeed>, latency: lab::Latency) -> TestEnv {
        let mut cfg = lab_config(accounts);
        cfg.latency = latency;
        TestEnv::with_lab(cfg).await
    }

    /// A lab configured by the test (throttling, faults from the start…).
    pub async fn with_lab(cfg: LabConfig) -> TestEnv {
        mailboxd::install_tls_provider();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let lab = Lab::start(cfg).await.expect("lab starts");
        let mut s = Settings::default();
        s.database.url = format!("{}/mailboxd_test_{tag}", pg_server());
        s.amqp.url = amqp_url();
        s.amqp.exchange = format!("test.{tag}.events");
        s.amqp.queue = format!("test.{tag}.jobs");
        s.amqp.dead_letter_exchange = format!("test.{tag}.dlx");
        s.amqp.queue_expires = Some(Duration::from_secs(300));
        s.winrm.endpoint = lab.endpoint();
        s.winrm.username = lab::DEFAULT_USER.into();
        s.winrm.password = Some(SecretString::from(LAB_PASSWORD));
        s.winrm.allow_unencrypted = true;
        s.exchange.mode = ExchangeMode::None;
        s.exchange.batch_linger = Duration::ZERO;
        // Directory checks against the lab's domain controller, as a deployment does against AD.
        s.ldap = lab
            .ldap_settings(lab::DEFAULT_USER, SecretString::from(LAB_PASSWORD))
            .expect("the test lab serves LDAP");
        s.worker.backoff_base = Duration::from_millis(200);
        s.worker.backoff_cap = Duration::from_secs(1);
        s.worker.poll_interval = Duration::from_millis(200);
        s.worker.lease = Duration::from_secs(30);
        s.admin.listen = "127.0.0.1:0".into();
        mailboxd::store::ensure_database(&s.database.url)
            .await
            .expect("test database can be created");
        let store = Store::connect(&s.database.url, 4).await.expect("connect");
        store.migrate().await.expect("migrate");
        TestEnv {
            settings: s,
            lab,
            store,
            http: reqwest::Client::new(),
            tag,
        }
    }

    pub async fn start_daemon(&self) -> App {
        App::start(self.settings.clone())
            .await
            .expect("daemon starts")
    }

    /// The environment that configures the `mailboxd` binary like `self.settings`.
    pub fn daemon_env(&self) -> Vec<(String, String)> {
        let s = &self.settings;
        let mut env = Vec::new();
        if !s.ldap.urls.is_empty() {
            use secrecy::ExposeSecret;
            env.extend([
                ("MAILBOXD__LDAP__URLS".into(), s.ldap.urls.join(",")),
                ("MAILBOXD__LDAP__BASE_DN".into(), s.ldap.base_dn.clone()),
                ("MAILBOXD__LDAP__BIND_DN".into(), s.ldap.bind_dn.clone()),
                (
                    "MAILBOXD__LDAP__STARTTLS".into(),
                    s.ldap.starttls.to_string(),
                ),
                (
                    "MAILBOXD__LDAP__ALLOW_PLAINTEXT".into(),
                    s.ldap.allow_plaintext.to_string(),
                ),
                (
                    "MAILBOXD_LDAP_PASSWORD".into(),
                    s.ldap
                        .password
                        .as_ref()
                        .map(|p| p.expose_secret().to_owned())
                        .unwrap_or_default(),
                ),
            ]);
        }
        env.extend([
            ("MAILBOXD__DATABASE__URL".into(), s.database.url.clone()),
            ("MAILBOXD__AMQP__URL".into(), s.amqp.url.clone()),
            ("MAILBOXD__AMQP__EXCHANGE".into(), s.amqp.exchange.clone()),
            ("MAILBOXD__AMQP__QUEUE".into(), s.amqp.queue.clone()),
            (
                "MAILBOXD__AMQP__DEAD_LETTER_EXCHANGE".into(),
                s.amqp.dead_letter_exchange.clone(),
            ),
            ("MAILBOXD__AMQP__QUEUE_EXPIRES".into(), "300s".into()),
            ("MAILBOXD__WINRM__ENDPOINT".into(), s.winrm.endpoint.clone()),
            ("MAILBOXD__WINRM__USERNAME".into(), s.winrm.username.clone()),
            ("MAILBOXD__WINRM__ALLOW_UNENCRYPTED".into(), "true".into()),
            ("MAILBOXD_WINRM_PASSWORD".into(), LAB_PASSWORD.into()),
            ("MAILBOXD__EXCHANGE__MODE".into(), "none".into()),
            ("MAILBOXD__EXCHANGE__BATCH_LINGER".into(), "0s".into()),
            ("MAILBOXD__WORKER__POLL_INTERVAL".into(), "200ms".into()),
            ("MAILBOXD__WORKER__LEASE".into(), "30s".into()),
            ("MAILBOXD__ADMIN__LISTEN".into(), "127.0.0.1:0".into()),
        ]);
        env
    }

    /// Starts `mailboxd run` as a child process.
    pub fn spawn_daemon(&self, extra_env: &[(&str, &str)]) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailboxd"));
        cmd.arg("run")
            .envs(self.daemon_env())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn mailboxd")
    }

    /// Runs a CLI command of the binary against this environment; returns stdout.
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_mailboxd"))
            .args(args)
            .envs(self.daemon_env())
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

    pub async fn wait_terminal(&self, event_id: &str) -> Job {
        self.wait_job(event_id, |j| j.state.is_terminal()).await
    }

    pub async fn wait_succeeded(&self, event_id: &str) -> Job {
        let job = self.wait_terminal(event_id).await;
        assert_eq!(job.state, JobState::Succeeded, "job: {job:?}");
        job
    }

    async fn lab_get(&self, path: &str) -> Vec<Value> {
        let v = self
            .get_json(&format!("http://{}{path}", self.lab.addr))
            .await;
        serde_json::from_value(v).expect("the lab answers with a JSON list")
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

    /// `POST /lab/faults`: one call switches a fault on.
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

    /// `GET /lab/stats`
    pub async fn lab_stats(&self) -> Value {
        self.http
            .get(format!("http://{}/lab/stats", self.lab.addr))
            .send()
            .await
            .expect("lab answers")
            .json()
            .await
            .expect("lab JSON")
    }

    /// `GET /lab/invocations`
    pub async fn invocations(&self) -> Vec<Value> {
        self.lab_get("/lab/invocations").await
    }

    /// The invocations of `cmdlet` for the account `identity` names: by itself, or by the
    /// objectGUID that the directory check passes to Exchange instead of the name.
    pub async fn invocations_of(&self, cmdlet: &str, identity: &str) -> Vec<Value> {
        let guid = self
            .lab_get("/lab/mailboxes")
            .await
            .into_iter()
            .find(|m| m["sam_account_name"] == identity)
            .and_then(|m| m["object_guid"].as_str().map(str::to_owned));
        self.invocations()
            .await
            .into_iter()
            .filter(|i| {
                i["cmdlet"] == cmdlet
                    && (i["parameters"]["Identity"] == identity
                        || guid
                            .as_deref()
                            .is_some_and(|g| i["parameters"]["Identity"] == g))
            })
            .collect()
    }

    /// `GET /lab/mailboxes`: every account the lab knows.
    pub async fn mailboxes(&self) -> Vec<Value> {
        self.lab_get("/lab/mailboxes").await
    }

    /// `GET /lab/mailboxes`, the entry for `sam`.
    pub async fn mailbox(&self, sam: &str) -> Value {
        self.lab_get("/lab/mailboxes")
            .await
            .into_iter()
            .find(|m| m["sam_account_name"] == sam)
            .unwrap_or_else(|| panic!("lab has no account {sam}"))
    }

    /// Deletes this test's queues and exchanges (they also expire on their own).
    pub async fn cleanup(self) {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        if let Ok(conn) = mailboxd::intake::connect(&self.settings.amqp.url, "test cleanup").await
            && let Ok(ch) = conn.create_channel().await
        {
            let a = &self.settings.amqp;
            let dead = mailboxd::intake::dead_letter_queue(a);
            for q in [a.queue.as_str(), dead.as_str()] {
                let _ = ch
                    .queue_delete(q.into(), QueueDeleteOptions::default())
                    .await;
            }
            for e in [a.exchange.as_str(), a.dead_letter_exchange.as_str()] {
                let _ = ch
                    .exchange_delete(e.into(), ExchangeDeleteOptions::default())
                    .await;
            }
        }
        self.lab.stop();
    }
}

/// An HTTP client for tests (with the process's TLS provider installed).
pub fn http() -> reqwest::Client {
    mailboxd::install_tls_provider();
    reqwest::Client::new()
}

/// Waits (bounded) for a child process to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
