//! Security, as the security team checks it: the secrets mailboxd holds never leave it (logs,
//! database, emails, metrics, the API, the dashboard, command lines), event values never
//! become PowerShell code, and clear text on the wire only ever happens when a setting says so.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::smtp::{SmtpSink, decode_parts};
use common::{Daemon, TestEnv, free_port, seed};
use mailboxd::config::{ExchangeMode, SmtpTls};
use mailboxd::job::JobState;
use mailboxd::publish::EventSpec;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Distinctive secret values, new for each run, planted where an operator puts them.
struct Planted {
    winrm: String,
    ldap: String,
    smtp: String,
    exchange: String,
    admin_token: String,
}

const SMTP_USER: &str = "mailboxd-alerts";
const EXCHANGE_USER: &str = "CORP\\svc-exchange";

impl Planted {
    fn new() -> Planted {
        let r = || uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Planted {
            winrm: format!("S3cr3t-winrm-{}", r()),
            ldap: format!("S3cr3t-ldap-{}", r()),
            smtp: format!("S3cr3t-smtp-{}", r()),
            exchange: format!("S3cr3t-exch-{}", r()),
            admin_token: format!("S3cr3t-admin-{}", r()),
        }
    }

    /// What must never be found: each secret, and the forms it takes on the wire (base64
    /// alone, HTTP Basic `user:password`, SMTP AUTH PLAIN `\0user\0password`).
    fn needles(&self) -> Vec<(String, String)> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut n = Vec::new();
        for (name, v) in [
            ("winrm password", &self.winrm),
            ("ldap password", &self.ldap),
            ("smtp password", &self.smtp),
            ("exchange password", &self.exchange),
            ("admin token", &self.admin_token),
        ] {
            n.push((name.to_owned(), v.clone()));
            n.push((format!("{name} (base64)"), b64(v)));
        }
        n.push((
            "winrm Basic credential".into(),
            b64(&format!("{}:{}", lab::DEFAULT_USER, self.winrm)),
        ));
        n.push((
            "smtp AUTH PLAIN".into(),
            b64(&format!("\0{SMTP_USER}\0{}", self.smtp)),
        ));
        n
    }

    /// The text Exchange answers with when it echoes credentials back (it happens: a
    /// diagnostic, a misconfigured proxy, a helpful wrapper script).
    fn exchange_error(&self, what: &str) -> String {
        format!(
            "{what} (diagnostic: remote session as {} with password {}, ldap bind {}, smtp relay {}, exchange credential {}, api token {})",
            lab::DEFAULT_USER,
            self.winrm,
            self.ldap,
            self.smtp,
            self.exchange,
            self.admin_token
        )
    }
}

/// Where the planted secrets reach the daemon from.
#[derive(Clone, Copy, PartialEq)]
enum SecretsFrom {
    /// `*_password_file` / `token_file` in a TOML configuration file.
    Files,
    /// `MAILBOXD_*_PASSWORD` / `MAILBOXD_ADMIN_TOKEN` in the environment.
    Environment,
}

/// Everything an outsider can read, labelled by where it came from.
#[derive(Default)]
struct Haystack(Vec<(String, String)>);

impl Haystack {
    fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        self.0.push((source.into(), text.into()));
    }

    /// Panics naming every place a needle was found.
    fn assert_free_of(&self, needles: &[(String, String)]) {
        let mut found = Vec::new();
        for (source, text) in &self.0 {
            for (name, needle) in needles {
                if let Some(at) = text.find(needle.as_str()) {
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(120)
                        .map_or(0, |(i, _)| i);
                    let to = (at + needle.len() + 40).min(text.len());
                    let to = (to..=text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap_or(text.len());
                    found.push(format!("{name} in {source}: …{}…", &text[from..to]));
                }
            }
        }
        assert!(
            found.is_empty(),
            "planted secrets leaked ({} places):\n{}",
            found.len(),
            found.join("\n")
        );
    }
}

/// Joiners through to success and to failure (with an alert emailed), with every secret
/// planted and Exchange echoing them; then everything readable is searched for them.
async fn no_planted_secret_leaves_the_daemon(from: SecretsFrom, log_format: &str) {
    let p = Planted::new();
    let maildir = tempfile::tempdir().expect("maildir");
    let (env, sink) = given_every_secret_planted_in_the_lab_and_the_settings(&p, &maildir).await;
    let config_dir = tempfile::tempdir().expect("config dir");
    let mut daemon = start_with_secrets_from(&env, &p, from, log_format, &config_dir).await;
    let jobs = when_exchange_echoes_the_secrets_in_errors_and_warnings(&env, &p).await;
    then_support_got_the_alert_through_an_smtp_login(&env, &sink, &daemon).await;

    let mut hay = Haystack::default();
    search_emails_and_the_database(&mut hay, &env, &sink).await;
    search_the_admin_api_metrics_and_dashboard(&mut hay, &env, &p, &daemon, &jobs).await;
    search_command_lines(&mut hay, &daemon);
    search_what_the_host_records(&mut hay, &env);
    search_the_logs_after_a_clean_stop(&mut hay, &mut daemon, log_format);
    hay.assert_free_of(&p.needles());
}

/// The lab accepts the planted WinRM, LDAP and Exchange passwords; alerts go to an SMTP
/// server that wants a login (so the SMTP password is really used); the API wants the token.
async fn given_every_secret_planted_in_the_lab_and_the_settings(
    p: &Planted,
    maildir: &tempfile::TempDir,
) -> (TestEnv, SmtpSink) {
    let mut cfg = common::lab_config(vec![seed("sec-fail"), seed("sec-ok")])
        .with_ldap_password(SecretString::from(p.ldap.clone()));
    cfg.password = SecretString::from(p.winrm.clone());
    let cfg = cfg.with_domain_account("svc-exchange", SecretString::from(p.exchange.clone()));
    let mut env = TestEnv::with_lab(cfg).await;

    let port = free_port();
    let sink = SmtpSink::with_login(port, maildir.path(), SMTP_USER, &p.smtp);
    common::smtp::send_to_sink(&mut env, port, "iam-support@corp.example");
    env.settings.smtp.username = Some(SMTP_USER.into());
    env.settings.smtp.password = Some(SecretString::from(p.smtp.clone()));
    env.settings.smtp.digest_window = Duration::from_millis(300);
    env.settings.smtp.retry_base = Duration::from_millis(200);
    // Remote Exchange session with an explicit credential (it travels on stdin).
    env.settings.exchange.mode = ExchangeMode::Remote;
    env.settings.exchange.connection_uris = vec!["http://lab-ex01.corp.example/PowerShell/".into()];
    env.settings.exchange.username = Some(EXCHANGE_USER.into());
    env.settings.exchange.password = Some(SecretString::from(p.exchange.clone()));
    env.settings.admin.token = Some(SecretString::from(p.admin_token.clone()));
    (env, sink)
}

/// The daemon (the binary) with the secrets from files or from the environment.
async fn start_with_secrets_from(
    env: &TestEnv,
    p: &Planted,
    from: SecretsFrom,
    log_format: &str,
    dir: &tempfile::TempDir,
) -> Daemon {
    let mut daemon_env = env.daemon_env();
    daemon_env.push(("RUST_LOG".into(), "info,mailboxd=debug".into()));
    // The dashboard's pages are read without a sign-in (the token is for the API only).
    daemon_env.push(("MAILBOXD__ADMIN__OPEN_READS".into(), "true".into()));
    let config = dir.path().join("mailboxd.toml");
    let mut args = vec!["--log-format", log_format];
    if from == SecretsFrom::Files {
        // No MAILBOXD_*_PASSWORD / MAILBOXD_ADMIN_TOKEN: only MAILBOXD__SECTION__KEY settings.
        daemon_env.retain(|(k, _)| k.starts_with("MAILBOXD__") || !k.starts_with("MAILBOXD_"));
        assert!(
            !daemon_env.iter().any(|(_, v)| v.contains("S3cr3t")),
            "secrets come from files only"
        );
        let file = |name: &str, value: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{value}\n")).expect("secret file");
            path
        };
        let toml = format!(
            "[winrm]\npassword_file = {:?}\n[ldap]\npassword_file = {:?}\n[smtp]\npassword_file = {:?}\n[exchange]\npassword_file = {:?}\n[admin]\ntoken_file = {:?}\n",
            file("winrm", &p.winrm),
            file("ldap", &p.ldap),
            file("smtp", &p.smtp),
            file("exchange", &p.exchange),
            file("token", &p.admin_token),
        );
        std::fs::write(&config, toml).expect("config file");
        args.extend(["--config", config.to_str().expect("UTF-8 path")]);
    } else {
        for key in [
            "MAILBOXD_WINRM_PASSWORD",
            "MAILBOXD_LDAP_PASSWORD",
            "MAILBOXD_SMTP_PASSWORD",
            "MAILBOXD_EXCHANGE_PASSWORD",
            "MAILBOXD_ADMIN_TOKEN",
        ] {
            assert!(
                daemon_env.iter().any(|(k, _)| k == key),
                "{key} is given in the environment"
            );
        }
    }
    let mut daemon = env.spawn_logged(&args, daemon_env).await;
    assert!(
        daemon.exit_status().is_none(),
        "the daemon did not start: {}",
        daemon.logs()
    );
    daemon
}

/// A joiner Exchange refuses for good, its error text echoing the credentials; a joiner
/// that fails once the same way (a transient error), then succeeds. Returns both jobs.
async fn when_exchange_echoes_the_secrets_in_errors_and_warnings(
    env: &TestEnv,
    p: &Planted,
) -> [mailboxd::store::Job; 2] {
    let publisher = env.publisher().await;

    env.fault(json!({"fault": "cmdlet_errors", "count": 1, "error": {
        "reason": "ProxyAddressExistsException",
        "message": p.exchange_error("The proxy address is already being used.")
    }}))
    .await;
    let failing = env.joiner("sec-fail");
    publisher.publish(&failing).await.expect("publish");
    let failed = env.wait_terminal(&failing.id).await;
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    let error = failed.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("already being used") && error.contains("[REDACTED]"),
        "Exchange's own words reach the operator, the secrets in them blacked out: {error}"
    );

    env.fault(json!({"fault": "cmdlet_errors", "count": 1, "error": {
        "reason": "ManagementObjectNotFoundException",
        "message": p.exchange_error("The object couldn't be found on the domain controller.")
    }}))
    .await;
    // And its PowerShell runs print a warning that echoes them too (it lands in the
    // attempts' transcripts).
    env.fault(json!({"fault": "stray_output", "count": 2,
        "text": p.exchange_error("WARNING: logon script")}))
        .await;
    let retried = env.joiner("sec-ok");
    publisher.publish(&retried).await.expect("publish");
    let ok = env.wait_succeeded(&retried.id).await;
    assert_eq!(ok.attempt, 2, "one failed attempt, then success: {ok:?}");
    [failed, ok]
}

async fn then_support_got_the_alert_through_an_smtp_login(
    env: &TestEnv,
    sink: &SmtpSink,
    daemon: &Daemon,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.messages().is_empty() || sink.logins() == 0 {
        assert!(
            Instant::now() < deadline,
            "no alert email within 30 s: {:?}\n{}",
            env.store.list_alerts(10).await,
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Emails, raw and decoded; every text-like column of every table.
async fn search_emails_and_the_database(hay: &mut Haystack, env: &TestEnv, sink: &SmtpSink) {
    for (i, mail) in sink.messages().iter().enumerate() {
        hay.add(format!("email #{i}"), mail.clone());
        hay.add(format!("email #{i} (decoded)"), decode_parts(mail));
    }
    let rows = env.database_text().await;
    assert!(
        rows.iter()
            .any(|(c, v)| c == "job_attempts.error_message" && v.contains("couldn't be found")),
        "the attempts are recorded: {rows:?}"
    );
    assert!(
        rows.iter().any(|(c, v)| c == "job_attempts.transcript"
            && v.contains("WARNING: logon script")
            && v.contains("[REDACTED]")),
        "the transcripts are recorded, the secrets in them blacked out: {rows:?}"
    );
    for (column, value) in rows {
        hay.add(format!("database {column}"), value);
    }
}

/// The admin API (with the token), the metrics and the dashboard (open reads).
async fn search_the_admin_api_metrics_and_dashboard(
    hay: &mut Haystack,
    env: &TestEnv,
    p: &Planted,
    daemon: &Daemon,
    jobs: &[mailboxd::store::Job; 2],
) {
    let base = format!("http://{}", daemon.admin);
    let mut api = vec![
        "/healthz".to_owned(),
        "/readyz".into(),
        "/metrics".into(),
        "/api/v1/jobs".into(),
        "/api/v1/jobs?state=failed".into(),
        "/api/v1/poison".into(),
        "/api/v1/alerts".into(),
        "/api/v1/reconcile/runs".into(),
        "/api/v1/openapi.json".into(),
        "/".into(),
        "/login".into(),
        "/jobs".into(),
        "/jobs?state=failed".into(),
        "/alerts".into(),
        "/poison".into(),
        "/reconcile".into(),
    ];
    for job in jobs {
        api.push(format!("/api/v1/jobs/{}", job.id));
        api.push(format!("/jobs/{}", job.id));
    }
    let mut transcripts = 0;
    for path in &api {
        let r = env
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(&p.admin_token)
            .send()
            .await
            .expect("the admin listener answers");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        hay.add(format!("GET {path} headers"), format!("{:?}", r.headers()));
        let body = r.text().await.expect("body");
        if path.starts_with("/api/v1/jobs/") {
            let v: Value = serde_json::from_str(&body).expect("job JSON");
            transcripts += v["attempts"].as_array().map_or(0, Vec::len);
        }
        hay.add(format!("GET {path}"), body);
    }
    assert!(transcripts >= 3, "the job details show their attempts");
}

/// Command lines, as `ps` shows them to every user of the machine: the daemon's own,
/// anything it started, and (generically) every process.
fn search_command_lines(hay: &mut Haystack, daemon: &Daemon) {
    let procs = common::process_command_lines();
    let own = procs
        .iter()
        .find(|p| p.0 == daemon.pid())
        .expect("the daemon's /proc/<pid>/cmdline is readable");
    assert!(own.2.contains(" run"), "{own:?}");
    for pid in common::descendants(daemon.pid(), &procs) {
        let argv = procs.iter().find(|p| p.0 == pid).map(|p| p.2.clone());
        hay.add(format!("cmdline of child {pid}"), argv.unwrap_or_default());
    }
    for (pid, _, argv) in &procs {
        hay.add(format!("cmdline of {pid}"), argv.clone());
    }
}

/// What the Windows host's PowerShell logging records: every cmdlet's parameters (module
/// logging) and ConvertFrom-Json's input, the request itself. The Exchange password
/// travels on stdin's first line and becomes a SecureString by method calls only.
fn search_what_the_host_records(hay: &mut Haystack, env: &TestEnv) {
    let module_log = env.lab.module_log();
    assert!(
        module_log.iter().any(|e| e.contains("sec-ok")),
        "the host's module log records the requests: {module_log:?}"
    );
    for (n, entry) in module_log.into_iter().enumerate() {
        hay.add(format!("host module log #{n}"), entry);
    }
    for i in env.lab.invocations() {
        let params = serde_json::to_string(&i.parameters).unwrap_or_default();
        hay.add(format!("host: {} #{} parameters", i.cmdlet, i.seq), params);
    }
}

/// The logs, after a clean stop (shutdown logs included).
fn search_the_logs_after_a_clean_stop(hay: &mut Haystack, daemon: &mut Daemon, log_format: &str) {
    let status = daemon.stop();
    assert!(status.success(), "{status:?}: {}", daemon.logs());
    let logs = daemon.logs();
    assert!(logs.contains("mailboxd running"), "{logs}");
    if log_format == "json" {
        for line in logs.lines() {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        }
    }
    hay.add(format!("daemon logs ({log_format})"), logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_from_files_never_show_up_anywhere_with_human_logs() {
    no_planted_secret_leaves_the_daemon(SecretsFrom::Files, "human").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_from_the_environment_never_show_up_anywhere_with_json_logs() {
    no_planted_secret_leaves_the_daemon(SecretsFrom::Environment, "json").await;
}

/// Starts the daemon with `extra` on top of the test environment; returns it (exited or
/// running) with its logs.
async fn start_with(env: &TestEnv, log_format: &str, extra: &[(&str, &str)]) -> Daemon {
    let mut vars = env.daemon_env();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.spawn_logged(&["--log-format", log_format], vars).await
}

/// It refused to start: exit code 2 and `expected` in its last words (a JSON object with
/// level ERROR in JSON format).
fn assert_refused(mut daemon: Daemon, log_format: &str, expected: &str) {
    let status = daemon.stop();
    let logs = daemon.logs();
    assert_eq!(status.code(), Some(2), "refused with exit code 2: {logs}");
    let line = logs
        .lines()
        .find(|l| l.contains(expected))
        .unwrap_or_else(|| panic!("no log line says {expected:?}: {logs}"));
    if log_format == "json" {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("the refusal is not a JSON log line ({e}): {line}"));
        assert_eq!(v["level"], "ERROR", "{v}");
    } else {
        assert!(line.starts_with("error: "), "{line}");
    }
}

/// It runs, and said at start that it was told to go without TLS.
fn assert_warned(mut daemon: Daemon, expected: &str) {
    assert!(
        daemon.exit_status().is_none(),
        "the daemon should run: {}",
        daemon.logs()
    );
    let status = daemon.stop();
    let logs = daemon.logs();
    assert!(status.success(), "{status:?}: {logs}");
    let line = logs
        .lines()
        .find(|l| l.contains(expected))
        .unwrap_or_else(|| panic!("no log line says {expected:?}: {logs}"));
    assert!(line.contains("WARN"), "logged as a warning: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn winrm_basic_auth_over_plain_http_needs_allow_unencrypted() {
    let env = TestEnv::new(vec![]).await;
    assert!(env.settings.winrm.endpoint.starts_with("http://"));
    // Basic (a local account of the host; the Exchange credential answers the second hop).
    let basic = ("MAILBOXD__WINRM__AUTH", "basic");
    for format in ["human", "json"] {
        let refused = start_with(
            &env,
            format,
            &[basic, ("MAILBOXD__WINRM__ALLOW_UNENCRYPTED", "false")],
        )
        .await;
        assert_refused(
            refused,
            format,
            "is plain HTTP: use https:// (port 5986), or set winrm.allow_unencrypted = true",
        );
    }
    // Without the setting in the environment at all: the default refuses too.
    let mut vars = env.daemon_env();
    vars.retain(|(k, _)| k != "MAILBOXD__WINRM__ALLOW_UNENCRYPTED" && k != basic.0);
    vars.push((basic.0.into(), basic.1.into()));
    assert_refused(env.spawn_logged(&[], vars).await, "human", "is plain HTTP");

    let allowed = start_with(
        &env,
        "human",
        &[basic, ("MAILBOXD__WINRM__ALLOW_UNENCRYPTED", "true")],
    )
    .await;
    assert_warned(allowed, "winrm.allow_unencrypted is set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ldap_without_tls_needs_allow_plaintext() {
    let env = TestEnv::new(vec![]).await;
    assert!(env.settings.ldap.urls[0].starts_with("ldap://"));
    let no_starttls = ("MAILBOXD__LDAP__STARTTLS", "false");
    for format in ["human", "json"] {
        let refused = start_with(
            &env,
            format,
            &[no_starttls, ("MAILBOXD__LDAP__ALLOW_PLAINTEXT", "false")],
        )
        .await;
        assert_refused(
            refused,
            format,
            "is plain LDAP with starttls = false; use ldaps://, StartTLS, or set allow_plaintext = true",
        );
    }
    let allowed = start_with(
        &env,
        "human",
        &[no_starttls, ("MAILBOXD__LDAP__ALLOW_PLAINTEXT", "true")],
    )
    .await;
    assert_warned(allowed, "LDAP without TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alert_email_goes_out_in_clear_text_only_with_smtp_tls_none() {
    let onprem = common::onprem("tls-onprem"); // Enable-RemoteMailbox fails for good
    let mut env = TestEnv::new(vec![onprem]).await;
    let port = free_port();
    let maildir = tempfile::tempdir().expect("maildir");
    let sink = SmtpSink::start(port, maildir.path()); // offers no STARTTLS
    common::smtp::send_to_sink(&mut env, port, "iam-support@corp.example");
    env.settings.smtp.retry_base = Duration::from_millis(200);
    env.settings.smtp.digest_window = Duration::from_millis(200);
    // The default (STARTTLS required): the alert is held back, never sent in clear text.
    env.settings.smtp.tls = SmtpTls::Starttls;
    let daemon = env.spawn_logged(&[], env.daemon_env()).await;
    let ev = env.joiner("tls-onprem");
    env.publisher().await.publish(&ev).await.expect("publish");
    assert_eq!(env.wait_terminal(&ev.id).await.state, JobState::Failed);
    then_without_starttls_the_alert_is_held_back_and_the_refusal_logged(&env, &sink, daemon).await;
    // Said explicitly: it goes out, and the daemon said at start that it would be clear text.
    env.settings.smtp.tls = SmtpTls::None;
    let daemon = env.spawn_logged(&[], env.daemon_env()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.messages().is_empty() {
        assert!(
            Instant::now() < deadline,
            "not delivered: {}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_warned(daemon, "smtp.tls = \"none\": alert emails");
}

/// The alert is kept unsent with why; nothing reached the sink; the daemon logged the
/// refusal as a warning and never said it would send in clear text.
async fn then_without_starttls_the_alert_is_held_back_and_the_refusal_logged(
    env: &TestEnv,
    sink: &SmtpSink,
    daemon: Daemon,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let alerts = env.store.list_alerts(10).await.expect("alerts");
        if let Some(a) = alerts.into_iter().find(|a| a.attempts > 0) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no send attempt: {}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(alert.sent_at.is_none(), "{alert:?}");
    let why = alert.last_error.clone().unwrap_or_default();
    assert!(why.contains("STARTTLS"), "{why}");
    assert!(sink.messages().is_empty(), "nothing went out in clear text");
    let mut daemon = daemon;
    assert!(daemon.stop().success(), "{}", daemon.logs());
    let refusal = daemon
        .logs()
        .lines()
        .find(|l| l.contains("cannot send the alert email"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the failed send is not logged: {}", daemon.logs()));
    assert!(
        refusal.contains("WARN") && refusal.to_lowercase().contains("tls"),
        "{refusal}"
    );
    assert!(
        !daemon.logs().contains("smtp.tls = \"none\""),
        "{}",
        daemon.logs()
    );
}

/// Name, alias and both addresses carry PowerShell syntax that their rules allow; the
/// typographic quotes and `$(…)` in a name are covered by pipeline.rs.
const HOSTILE_NAME: &str = "h'`$x{1}\u{2018}\u{201E}";
const HOSTILE_ROUTING: &str = "r'`$|{z}@tenant.mail.onmicrosoft.com";
const HOSTILE_PRIMARY: &str = "p'`$&x@corp.example";

/// The hostile alias, without what Exchange's rules do not allow in an alias.
fn hostile_alias() -> String {
    "a'`$(x)|{y}&b".replace(['(', ')'], "")
}

/// `;` and line breaks end a PowerShell statement: AD and SMTP do not allow them in these
/// fields, so such events are refused as poison before anything runs.
fn events_that_end_a_statement(env: &TestEnv) -> Vec<(&'static str, EventSpec)> {
    vec![
        ("name with ;", {
            let mut e = env.joiner("x;Remove-Mailbox");
            e.alias = Some("semi".into());
            e
        }),
        ("name with a newline", env.joiner("x\nRemove-Mailbox")),
        ("alias with a newline", {
            let mut e = env.joiner("ok-after");
            e.alias = Some("a\r\nRemove-Mailbox".into());
            e
        }),
        ("alias with ;", {
            let mut e = env.joiner("ok-after");
            e.alias = Some("a;Remove-Mailbox".into());
            e
        }),
        ("address with ;", {
            let mut e = env.joiner("ok-after");
            e.remote_routing_address = Some("x;Remove-Mailbox@tenant.mail.onmicrosoft.com".into());
            e
        }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_values_in_every_field_stay_data_or_are_refused() {
    let mut env = TestEnv::new(vec![seed(HOSTILE_NAME), seed("ok-after")]).await;
    // Without a directory the name itself is the -Identity Exchange receives.
    env.settings.ldap = Default::default();
    let app = env.start_daemon().await;
    let publisher = env.publisher().await;

    let mut ev = env.joiner(HOSTILE_NAME);
    ev.alias = Some(hostile_alias());
    ev.remote_routing_address = Some(HOSTILE_ROUTING.into());
    ev.primary_smtp_address = Some(HOSTILE_PRIMARY.into());
    publisher.publish(&ev).await.expect("publish");
    env.wait_succeeded(&ev.id).await;

    let refused = events_that_end_a_statement(&env);
    for (_, e) in &refused {
        publisher.publish(e).await.expect("publish");
    }
    // A good event after them: once it is done, the hostile ones have been judged.
    let after = env.joiner("ok-after");
    publisher.publish(&after).await.expect("publish");
    env.wait_succeeded(&after.id).await;
    then_each_is_poison_and_none_became_a_job(&env, &refused).await;
    then_exchange_got_the_values_byte_for_byte_and_only_the_templates_cmdlets(&env);
    app.stop().await;
}

async fn then_each_is_poison_and_none_became_a_job(env: &TestEnv, refused: &[(&str, EventSpec)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let poison = loop {
        let p = env.store.list_poison(50).await.expect("poison");
        if p.len() >= refused.len() {
            break p;
        }
        assert!(Instant::now() < deadline, "poison so far: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(poison.len(), refused.len(), "{poison:?}");
    for (what, e) in refused {
        assert!(
            env.store
                .job_by_event(&e.id)
                .await
                .expect("query")
                .is_none(),
            "{what} became a job"
        );
    }
}

/// Exactly the two expected Enable-RemoteMailbox calls, values byte for byte, and nothing
/// but the template's cmdlets ran.
fn then_exchange_got_the_values_byte_for_byte_and_only_the_templates_cmdlets(env: &TestEnv) {
    let alias = hostile_alias();
    let calls = env.lab.invocations();
    let enable: Vec<&lab::Invocation> = calls
        .iter()
        .filter(|c| c.cmdlet == "Enable-RemoteMailbox")
        .collect();
    assert_eq!(enable.len(), 2, "{calls:#?}");
    let p = enable[0];
    assert_eq!(p.identity(), Some(HOSTILE_NAME));
    assert_eq!(p.text("Alias"), Some(alias.as_str()));
    assert_eq!(p.text("RemoteRoutingAddress"), Some(HOSTILE_ROUTING));
    assert_eq!(p.text("PrimarySmtpAddress"), Some(HOSTILE_PRIMARY));
    assert_eq!(enable[1].identity(), Some("ok-after"));
    assert!(
        calls.iter().all(|c| [
            "Enable-RemoteMailbox",
            "Get-RemoteMailbox",
            "Set-RemoteMailbox",
            // common.ps1's Exchange session (remote mode, the tests' default now).
            "New-PSSession",
            "Import-PSSession",
            "Remove-PSSession"
        ]
        .contains(&c.cmdlet.as_str())),
        "{calls:#?}"
    );
    let all = serde_json::to_string(&calls).expect("JSON");
    assert!(!all.contains("Remove-Mailbox"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weak_api_tokens_and_an_ldap_bind_dn_without_a_password_are_refused_at_start() {
    let env = TestEnv::new(vec![]).await;
    // A guessable admin token: refused with the rule, the value itself never printed.
    for format in ["human", "json"] {
        let daemon = start_with(
            &env,
            format,
            &[("MAILBOXD_ADMIN_TOKEN", "changeme-admin-1")],
        )
        .await;
        let logs = daemon.logs();
        assert!(
            !logs.contains("changeme-admin-1"),
            "the token reached the log: {logs}"
        );
        assert_refused(daemon, format, "API tokens need at least 128 bits");
    }
    // A named token in a file, just as weak.
    let dir = tempfile::tempdir().unwrap();
    let weak = dir.path().join("grafana-token");
    std::fs::write(&weak, "grafana-read-token\n").unwrap();
    let config = dir.path().join("mailboxd.toml");
    std::fs::write(
        &config,
        format!("[[admin.tokens]]\nname = \"grafana\"\nrole = \"viewer\"\ntoken_file = {weak:?}\n"),
    )
    .unwrap();
    let daemon = env
        .spawn_logged(&["--config", config.to_str().unwrap()], env.daemon_env())
        .await;
    assert_refused(daemon, "human", "grafana:");
    // The service account named without its password would bind anonymously, and AD
    // answers an anonymous bind with success: refused before it could look like it works.
    let mut vars = env.daemon_env();
    vars.retain(|(k, _)| k != "MAILBOXD_LDAP_PASSWORD");
    assert_refused(env.spawn_logged(&[], vars).await, "human", "anonymous bind");
    let daemon = start_with(&env, "json", &[("MAILBOXD_LDAP_PASSWORD", "")]).await;
    assert_refused(daemon, "json", "ldap.bind_dn is");
    // 32 hex digits (`openssl rand -hex 16`) are enough.
    let strong = start_with(
        &env,
        "human",
        &[("MAILBOXD_ADMIN_TOKEN", "6f1d0c2a9b3e4f5a6b7c8d9e0f1a2b3c")],
    )
    .await;
    let mut strong = strong;
    assert!(strong.exit_status().is_none(), "{}", strong.logs());
    assert!(strong.stop().success());
}
