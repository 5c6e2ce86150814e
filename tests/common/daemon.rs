//! The daemon as a child process, for tests that kill it, read its logs or check its
//! process listing: the environment that configures it like a `TestEnv`'s settings, and
//! guards that kill it when dropped (a test that fails leaves no daemon running).

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use mailboxd::config::{ExchangeMode, Settings, SmtpTls};
use secrecy::ExposeSecret;

/// `(variable, value)` pairs for a child process's environment.
pub type Env = Vec<(String, String)>;

fn var(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// The environment that configures the `mailboxd` binary like `s`, with `winrm_password`.
pub fn daemon_env(s: &Settings, winrm_password: &str) -> Env {
    let mut env = ldap_env(s);
    env.extend(core_env(s, winrm_password));
    env.extend(exchange_env(s));
    if let Some(token) = &s.admin.token {
        env.push(var("MAILBOXD_ADMIN_TOKEN", token.expose_secret()));
    }
    env.extend(smtp_env(s));
    env.extend(outcomes_env(s));
    env.extend(cloud_env(s));
    env.extend(http_intake_env(s));
    env.extend(callback_env(s));
    env
}

/// `[http_intake]`, when it listens: the listener, its certificate and the bearer token.
fn http_intake_env(s: &Settings) -> Env {
    let h = &s.http_intake;
    let Some(listen) = &h.listen else {
        return Vec::new();
    };
    let path = |p: &Option<std::path::PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let mut env = vec![
        var("MAILBOXD__HTTP_INTAKE__LISTEN", listen),
        var(
            "MAILBOXD__HTTP_INTAKE__TLS_CERT_FILE",
            path(&h.tls_cert_file),
        ),
        var("MAILBOXD__HTTP_INTAKE__TLS_KEY_FILE", path(&h.tls_key_file)),
    ];
    if let Some(token) = &h.token {
        env.push(var("MAILBOXD_HTTP_INTAKE_TOKEN", token.expose_secret()));
    }
    env
}

/// `[outcome_callback]`, when it has a URL: the secrets through their variables.
fn callback_env(s: &Settings) -> Env {
    let c = &s.outcome_callback;
    let Some(url) = &c.url else {
        return Vec::new();
    };
    let mut env = vec![
        var("MAILBOXD__OUTCOME_CALLBACK__URL", url),
        var(
            "MAILBOXD__OUTCOME_CALLBACK__TIMEOUT",
            format!("{}ms", c.timeout.as_millis()),
        ),
    ];
    if c.outcomes == mailboxd::config::CallbackOutcomes::All {
        env.push(var("MAILBOXD__OUTCOME_CALLBACK__OUTCOMES", "all"));
    }
    if let Some(ca) = &c.ca_file {
        env.push(var(
            "MAILBOXD__OUTCOME_CALLBACK__CA_FILE",
            ca.display().to_string(),
        ));
    }
    for (name, secret) in [
        ("MAILBOXD_OUTCOME_CALLBACK_CREDENTIAL", &c.credential),
        ("MAILBOXD_OUTCOME_CALLBACK_SIGNING_KEY", &c.signing_key),
    ] {
        if let Some(v) = secret {
            env.push(var(name, v.expose_secret()));
        }
    }
    env
}

/// `[cloud]`, when the settings confirm joiners in the cloud.
fn cloud_env(s: &Settings) -> Env {
    let c = &s.cloud;
    if c.confirm == mailboxd::config::CloudConfirmation::Off {
        return Vec::new();
    }
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    vec![
        var("MAILBOXD__CLOUD__CONFIRM", "directory"),
        var("MAILBOXD__CLOUD__DEADLINE", ms(c.deadline)),
        var("MAILBOXD__CLOUD__POLL_INTERVAL", ms(c.poll_interval)),
        var("MAILBOXD__CLOUD__POLL_CAP", ms(c.poll_cap)),
        var("MAILBOXD__CLOUD__LEASE", ms(c.lease)),
    ]
}

/// `[outcomes]`, when the settings name an outcome exchange.
fn outcomes_env(s: &Settings) -> Env {
    let o = &s.outcomes;
    let Some(exchange) = &o.exchange else {
        return Vec::new();
    };
    let ms = |d: std::time::Duration| format!("{}ms", d.as_millis());
    vec![
        var("MAILBOXD__OUTCOMES__EXCHANGE", exchange),
        var("MAILBOXD__OUTCOMES__POLL_INTERVAL", ms(o.poll_interval)),
        var("MAILBOXD__OUTCOMES__RETRY_BASE", ms(o.retry_base)),
        var("MAILBOXD__OUTCOMES__RETRY_CAP", ms(o.retry_cap)),
    ]
}

/// The database, the broker names, the WinRM host and the worker's test timings.
fn core_env(s: &Settings, winrm_password: &str) -> Env {
    let mode = match s.exchange.mode {
        ExchangeMode::Remote => "remote",
        ExchangeMode::Snapin => "snapin",
        ExchangeMode::None => "none",
    };
    vec![
        var("MAILBOXD__DATABASE__URL", &s.database.url),
        var("MAILBOXD__AMQP__URL", &s.amqp.url),
        var("MAILBOXD__AMQP__EXCHANGE", &s.amqp.exchange),
        var("MAILBOXD__AMQP__QUEUE", &s.amqp.queue),
        var(
            "MAILBOXD__AMQP__DEAD_LETTER_EXCHANGE",
            &s.amqp.dead_letter_exchange,
        ),
        var("MAILBOXD__AMQP__QUEUE_EXPIRES", "300s"),
        var("MAILBOXD__WINRM__ENDPOINT", &s.winrm.endpoint),
        var("MAILBOXD__WINRM__USERNAME", &s.winrm.username),
        var("MAILBOXD__WINRM__AUTH", s.winrm.auth.name()),
        var(
            "MAILBOXD__WINRM__ALLOW_UNENCRYPTED",
            s.winrm.allow_unencrypted.to_string(),
        ),
        var("MAILBOXD_WINRM_PASSWORD", winrm_password),
        var("MAILBOXD__EXCHANGE__MODE", mode),
        var("MAILBOXD__EXCHANGE__BATCH_LINGER", "0s"),
        var("MAILBOXD__WORKER__POLL_INTERVAL", "200ms"),
        var("MAILBOXD__WORKER__LEASE", "30s"),
        var("MAILBOXD__ADMIN__LISTEN", "127.0.0.1:0"),
    ]
}

/// `[ldap]`, when the settings name a directory.
fn ldap_env(s: &Settings) -> Env {
    let l = &s.ldap;
    if l.urls.is_empty() {
        return Vec::new();
    }
    let password = l.password.as_ref().map(|p| p.expose_secret().to_owned());
    let ca = l
        .ca_file
        .iter()
        .map(|f| var("MAILBOXD__LDAP__CA_FILE", f.to_string_lossy().into_owned()));
    let mut env: Env = ca.collect();
    env.extend([
        var("MAILBOXD__LDAP__URLS", l.urls.join(",")),
        var("MAILBOXD__LDAP__BASE_DN", &l.base_dn),
        var("MAILBOXD__LDAP__BIND_DN", &l.bind_dn),
        var("MAILBOXD__LDAP__STARTTLS", l.starttls.to_string()),
        var(
            "MAILBOXD__LDAP__ALLOW_PLAINTEXT",
            l.allow_plaintext.to_string(),
        ),
        var("MAILBOXD_LDAP_PASSWORD", password.unwrap_or_default()),
    ]);
    env
}

/// The Exchange session's servers and explicit credential, when set.
fn exchange_env(s: &Settings) -> Env {
    let x = &s.exchange;
    let mut env = Vec::new();
    if !x.connection_uris.is_empty() {
        env.push(var(
            "MAILBOXD__EXCHANGE__CONNECTION_URIS",
            x.connection_uris.join(","),
        ));
    }
    if let Some(hop) = x.second_hop {
        let hop = format!("{hop:?}").to_lowercase();
        env.push(var("MAILBOXD__EXCHANGE__SECOND_HOP", hop));
    }
    if let Some(user) = &x.username {
        env.push(var("MAILBOXD__EXCHANGE__USERNAME", user));
    }
    if let Some(pw) = &x.password {
        env.push(var("MAILBOXD_EXCHANGE_PASSWORD", pw.expose_secret()));
    }
    env
}

/// `[smtp]`, when the settings name a mail server.
fn smtp_env(s: &Settings) -> Env {
    let m = &s.smtp;
    if m.host.is_empty() {
        return Vec::new();
    }
    let tls = match m.tls {
        SmtpTls::Starttls => "starttls",
        SmtpTls::Implicit => "implicit",
        SmtpTls::None => "none",
    };
    let mut env = vec![
        var("MAILBOXD__SMTP__HOST", &m.host),
        var("MAILBOXD__SMTP__PORT", m.port.to_string()),
        var("MAILBOXD__SMTP__TLS", tls),
        var("MAILBOXD__SMTP__FROM", &m.from),
        var("MAILBOXD__SMTP__TO", m.to.join(",")),
        var(
            "MAILBOXD__SMTP__DIGEST_WINDOW",
            format!("{}ms", m.digest_window.as_millis()),
        ),
        var(
            "MAILBOXD__SMTP__RETRY_BASE",
            format!("{}ms", m.retry_base.as_millis()),
        ),
    ];
    if let Some(user) = &m.username {
        env.push(var("MAILBOXD__SMTP__USERNAME", user));
    }
    if let Some(pw) = &m.password {
        env.push(var("MAILBOXD_SMTP_PASSWORD", pw.expose_secret()));
    }
    env
}

/// A child process killed (and reaped) when dropped, unless it already ended. Derefs to
/// its [`Child`], so `kill`, `wait` and `wait_exit` work on it as on the process.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `mailboxd run` as a child process (`TestEnv::spawn_logged`), logs kept in files; killed
/// when dropped.
pub struct Daemon {
    pub child: KillOnDrop,
    /// `127.0.0.1:port` of the admin listener.
    pub admin: String,
    pub(super) logs: tempfile::TempDir,
    pub(super) exited: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it did (a refusal to start ends it at once).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
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
    pub fn stop(&mut self) -> ExitStatus {
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

/// Waits (bounded) for a child process to exit.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
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
