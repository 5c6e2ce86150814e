//! The daemon as its own process (`mailboxd run`), for figures that must be its alone:
//! configured by a file, stopped however the bench ends.

use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::SecretString;

use crate::config::Settings;

/// A TOML string (JSON's escapes are TOML's).
fn toml_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The daemon as its own process (`mailboxd run`), configured like `s`: a configuration
/// file and the secrets in files (never on the command line), in `dir`.
pub(crate) fn spawn_daemon(
    s: &Settings,
    dir: &std::path::Path,
) -> anyhow::Result<std::process::Child> {
    use secrecy::ExposeSecret;
    let secret_file = |name: &str, v: &Option<SecretString>| -> anyhow::Result<String> {
        let path = dir.join(name);
        std::fs::write(&path, v.as_ref().map(|p| p.expose_secret()).unwrap_or(""))?;
        Ok(toml_str(&path.to_string_lossy()))
    };
    let list = |v: &[String]| {
        format!(
            "[{}]",
            v.iter().map(|x| toml_str(x)).collect::<Vec<_>>().join(", ")
        )
    };
    let ms = |d: Duration| toml_str(&format!("{}ms", d.as_millis()));
    let toml = format!(
        "[database]\nurl = {}\n\
         [amqp]\nurl = {}\nexchange = {}\nqueue = {}\ndead_letter_exchange = {}\nqueue_expires = \"600s\"\nqueue_type = {}\nprefetch = {}\n\
         [winrm]\nendpoint = {}\nauth = {}\nusername = {}\npassword_file = {}\nallow_unencrypted = {}\n\
         [ldap]\nurls = {}\nbase_dn = {}\nbind_dn = {}\npassword_file = {}\nstarttls = false\nallow_plaintext = true\n\
         [exchange]\nmode = \"remote\"\nconnection_uris = {}\nusername = {}\npassword_file = {}\nbatch_size = {}\nbatch_linger = {}\nwarm_sessions = {}\nmax_sessions = {}\n\
         [worker]\nconcurrency = {}\npoll_interval = {}\n\
         [admin]\nlisten = {}\nopen_reads = {}\n",
        toml_str(&s.database.url),
        toml_str(&s.amqp.url),
        toml_str(&s.amqp.exchange),
        toml_str(&s.amqp.queue),
        toml_str(&s.amqp.dead_letter_exchange),
        toml_str(s.amqp.queue_type.as_str()),
        s.amqp.prefetch,
        toml_str(&s.winrm.endpoint),
        toml_str(s.winrm.auth.name()),
        toml_str(&s.winrm.username),
        secret_file("winrm-password", &s.winrm.password)?,
        s.winrm.allow_unencrypted,
        list(&s.ldap.urls),
        toml_str(&s.ldap.base_dn),
        toml_str(&s.ldap.bind_dn),
        secret_file("ldap-password", &s.ldap.password)?,
        list(&s.exchange.connection_uris),
        toml_str(s.exchange.username.as_deref().unwrap_or_default()),
        secret_file("exchange-password", &s.exchange.password)?,
        s.exchange.batch_size,
        ms(s.exchange.batch_linger),
        s.exchange.warm_sessions,
        s.exchange.max_sessions,
        s.worker.concurrency,
        ms(s.worker.poll_interval),
        toml_str(&s.admin.listen),
        s.admin.open_reads,
    );
    let config = dir.join("mailboxd.toml");
    std::fs::write(&config, toml)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // Only the file configures it: no MAILBOXD_* overrides from this shell.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MAILBOXD") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().context("starting mailboxd run")
}

/// A child process that is stopped however the bench ends (an error or a panic too), so
/// no daemon is left working on the bench database.
pub(crate) struct ChildGuard(pub(crate) std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        stop_child(&mut self.0);
    }
}

/// SIGTERM (as systemd stops it), then waits up to 30 s, then kills.
fn stop_child(child: &mut std::process::Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (bounded) until `mailboxd run` answers on its admin listener.
pub(crate) async fn wait_healthy(
    child: &mut std::process::Child,
    admin: &str,
) -> anyhow::Result<()> {
    winrm::tls::install_provider();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!("mailboxd run exited at start: {status}");
        }
        let ok = http
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "mailboxd run did not answer /healthz within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
