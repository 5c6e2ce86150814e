//! Shared test helpers: each test gets a fresh PostgreSQL database, its own RabbitMQ
//! exchange and queues, and its own lab on a random port, then starts the real daemon
//! (in-process, or as the binary when the test needs to kill it).

#![allow(dead_code)]

pub mod ad;
pub mod echo_host;
pub mod smtp;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab::{self, AccountSeed, Lab, LabConfig};
use mailboxd::app::App;
use mailboxd::config::{ExchangeMode, Settings};
use mailboxd::event::EventKind;
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
        ldap_password: None,
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
        kerberos: None,
    }
}

/// One test's world: database, broker names, lab, settings for the daemon.
pub struct TestEnv {
    pub settings: Settings,
    pub lab: Lab,
    pub store: Store,
    pub http: reqwest::Client,
    pub tag: String,
    /// The password the lab's WinRM endpoint accepts (what the daemon is given).
    pub winrm_password: String,
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
        use secrecy::ExposeSecret;
        winrm::tls::install_provider();
        let winrm_password = cfg.password.expose_secret().to_owned();
        let ldap_password = cfg.ldap_password.clone().unwrap_or(cfg.password.clone());
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
        s.winrm.password = Some(SecretString::from(winrm_password.clone()));
        s.winrm.allow_unencrypted = true;
        s.exchange.mode = ExchangeMode::None;
        s.exchange.batch_linger = Duration::ZERO;
        // Directory checks against the lab's domain controller, as a deployment does against AD.
        s.ldap = mailboxd::tools::lab_setup::ldap_settings(&lab, lab::DEFAULT_USER, ldap_password)
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
            winrm_password,
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
            (
                "MAILBOXD_WINRM_PASSWORD".into(),
                self.winrm_password.clone(),
            ),
            (
                "MAILBOXD__EXCHANGE__MODE".into(),
                match s.exchange.mode {
                    ExchangeMode::Remote => "remote",
                    ExchangeMode::Snapin => "snapin",
                    ExchangeMode::None => "none",
                }
                .into(),
            ),
            ("MAILBOXD__EXCHANGE__BATCH_LINGER".into(), "0s".into()),
            ("MAILBOXD__WORKER__POLL_INTERVAL".into(), "200ms".into()),
            ("MAILBOXD__WORKER__LEASE".into(), "30s".into()),
            ("MAILBOXD__ADMIN__LISTEN".into(), "127.0.0.1:0".into()),
        ]);
        {
            use secrecy::ExposeSecret;
            let x = &s.exchange;
            if !x.connection_uris.is_empty() {
                env.push((
                    "MAILBOXD__EXCHANGE__CONNECTION_URIS".into(),
                    x.connection_uris.join(","),
                ));
            }
            if let Some(user) = &x.username {
                env.push(("MAILBOXD__EXCHANGE__USERNAME".into(), user.clone()));
            }
            if let Some(pw) = &x.password {
                env.push((
                    "MAILBOXD_EXCHANGE_PASSWORD".into(),
                    pw.expose_secret().to_owned(),
                ));
            }
            if let Some(token) = &s.admin.token {
                env.push((
                    "MAILBOXD_ADMIN_TOKEN".into(),
                    token.expose_secret().to_owned(),
                ));
            }
            let m = &s.smtp;
            if !m.host.is_empty() {
                let tls = match m.tls {
                    mailboxd::config::SmtpTls::Starttls => "starttls",
                    mailboxd::config::SmtpTls::Implicit => "implicit",
                    mailboxd::config::SmtpTls::None => "none",
                };
                env.extend([
                    ("MAILBOXD__SMTP__HOST".into(), m.host.clone()),
                    ("MAILBOXD__SMTP__PORT".into(), m.port.to_string()),
                    ("MAILBOXD__SMTP__TLS".into(), tls.into()),
                    ("MAILBOXD__SMTP__FROM".into(), m.from.clone()),
                    ("MAILBOXD__SMTP__TO".into(), m.to.join(",")),
                    (
                        "MAILBOXD__SMTP__DIGEST_WINDOW".into(),
                        format!("{}ms", m.digest_window.as_millis()),
                    ),
                    (
                        "MAILBOXD__SMTP__RETRY_BASE".into(),
                        format!("{}ms", m.retry_base.as_millis()),
                    ),
                ]);
                if let Some(user) = &m.username {
                    env.push(("MAILBOXD__SMTP__USERNAME".into(), user.clone()));
                }
                if let Some(pw) = &m.password {
                    env.push((
                        "MAILBOXD_SMTP_PASSWORD".into(),
                        pw.expose_secret().to_owned(),
                    ));
                }
            }
        }
        env
    }

    /// Starts `mailboxd run` as a child process with `args` (e.g. `--log-format json`) and
    /// exactly the environment `env` (start from `daemon_env()`), its stdout and stderr kept
    /// in files, the admin listener on a free port; returns once `/healthz` answers (or the
    /// process has exited: a refusal to start).
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
            child,
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

    /// Successful Enable-RemoteMailbox calls per sAMAccountName, whether Exchange was given
    /// the name or the objectGUID the directory check found.
    pub async fn enables_per_account(&self) -> std::collections::HashMap<String, usize> {
        let sam_of: std::collections::HashMap<String, String> = self
            .mailboxes()
            .await
            .iter()
            .flat_map(|m| {
                let sam = m["sam_account_name"].as_str().unwrap_or("").to_owned();
                let guid = m["object_guid"].as_str().unwrap_or("").to_owned();
                [(sam.clone(), sam.clone()), (guid, sam)]
            })
            .collect();
        let mut n = std::collections::HashMap::new();
        for c in self.invocations().await {
            if c["cmdlet"] == "Enable-RemoteMailbox" && c["error"].is_null() {
                let id = c["parameters"]["Identity"].as_str().unwrap_or("");
                *n.entry(sam_of.get(id).cloned().unwrap_or(id.to_owned()))
                    .or_default() += 1;
            }
        }
        n
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

/// A free TCP port on loopback (bound, then released for the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `mailboxd run` as a child process (`TestEnv::spawn_logged`), logs kept in files.
pub struct Daemon {
    pub child: Child,
    /// `127.0.0.1:port` of the admin listener.
    pub admin: String,
    logs: tempfile::TempDir,
    exited: Option<std::process::ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it did (a refusal to start ends it at once).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Everything it wrote: stdout, then stderr.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.logs.path().join(f)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// SIGTERM, as systemd stops it; waits (bounded) for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(status) = self.exit_status() {
            return status;
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM to {} failed", self.pid());
        let status = wait_exit(&mut self.child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("mailboxd ignored SIGTERM for 60 s: {}", self.logs()));
        self.exited = Some(status);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The command line of every process on this machine, as `ps` shows it to any user:
/// `(pid, parent pid, argv joined by spaces)`.
pub fn process_command_lines() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue; // exited meanwhile
        };
        let ppid = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| {
                // "pid (comm) state ppid …"; comm may hold spaces and parentheses.
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0);
        let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
        out.push((pid, ppid, argv.trim_end().to_owned()));
    }
    out
}

/// The processes `pid` started, and theirs, from a `process_command_lines()` snapshot.
pub fn descendants(pid: u32, procs: &[(u32, u32, String)]) -> Vec<u32> {
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    found.remove(0);
    found
}

/// An HTTP client for tests (with the process's TLS provider installed).
pub fn http() -> reqwest::Client {
    winrm::tls::install_provider();
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
