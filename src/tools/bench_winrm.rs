//! `mailboxd bench winrm`: what each way of reaching the host costs per command, against a
//! lab with no added latency — a new shell per command (open, run, close) and a command in a
//! shell that is already open — for Basic and NTLM over HTTP and HTTPS.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde::Serialize;

use lab::{self, Lab, LabConfig};
use winrm::{Auth, ClientConfig, ShellOptions, WinrmClient};

#[derive(Serialize)]
struct Row {
    mode: &'static str,
    /// The first shell on a new client: connection, TLS, authentication (KDC for Kerberos).
    first_shell_ms: f64,
    /// Mean milliseconds for open shell + `hostname` + close.
    fresh_shell_ms: f64,
    /// Mean milliseconds for `hostname` in an open shell.
    open_shell_ms: f64,
    fresh_shell_p95_ms: f64,
    open_shell_p95_ms: f64,
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let p95 = v
        .get(((v.len() as f64 - 1.0) * 0.95).round() as usize)
        .copied()
        .unwrap_or(0.0);
    (mean, p95)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A KDC to measure Kerberos against, from a file of `KEY=value` lines as
/// `deploy/dev/samba-ad.sh` writes them (`MAILBOXD_TEST_KRB_*` in its `ad.env`).
struct Kdc {
    kdc: String,
    spn: String,
    keytab: std::path::PathBuf,
    user: String,
    password: String,
}

fn read_kdc(path: &std::path::Path) -> anyhow::Result<Kdc> {
    let text = std::fs::read_to_string(path)?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("{} has no {k}", path.display()))
    };
    Ok(Kdc {
        kdc: get("MAILBOXD_TEST_KRB_KDC")?,
        spn: get("MAILBOXD_TEST_KRB_SPN")?,
        keytab: get("MAILBOXD_TEST_KRB_KEYTAB")?.into(),
        user: get("MAILBOXD_TEST_KRB_USER")?,
        password: std::fs::read_to_string(get("MAILBOXD_TEST_KRB_PASSWORD_FILE")?)?
            .trim_end()
            .to_owned(),
    })
}

pub(crate) async fn bench_winrm(
    shells: usize,
    commands: usize,
    kerberos_env: Option<&std::path::Path>,
    out: &super::bench::Output,
) -> anyhow::Result<i32> {
    let ca = tempfile_path()?;
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cfg = LabConfig::new(
        ([127, 0, 0, 1], 0).into(),
        lab::DEFAULT_USER,
        SecretString::from(password.clone()),
    );
    cfg.tls_listen = Some(([127, 0, 0, 1], 0).into());
    cfg.tls_cert_out = Some(ca.clone());
    let kdc = kerberos_env.map(read_kdc).transpose()?;
    if let Some(k) = &kdc {
        let entries =
            winrm::acceptor::read_keytab(&std::fs::read(&k.keytab)?).map_err(anyhow::Error::msg)?;
        let key = winrm::acceptor::service_key(&entries, &k.spn)
            .ok_or_else(|| anyhow::anyhow!("no AES key for {} in the keytab", k.spn))?;
        let account = k.user.split('@').next().unwrap_or(&k.user).to_owned();
        cfg.kerberos = Some(lab::wsman::LabKerberos {
            spn: k.spn.clone(),
            key,
            allowed: vec![account],
        });
    }
    let lab = Lab::start(cfg).await?;
    let https = lab
        .tls_endpoint()
        .ok_or_else(|| anyhow::anyhow!("the lab has no TLS listener"))?;
    let mut modes: Vec<(&'static str, Auth, String)> = vec![
        ("basic/http", Auth::Basic, lab.endpoint()),
        ("basic/https", Auth::Basic, https.clone()),
        ("ntlm/http (sealed)", Auth::Ntlm, lab.endpoint()),
        ("ntlm/https (channel-bound)", Auth::Ntlm, https.clone()),
    ];
    if kdc.is_some() {
        modes.push(("kerberos/http (sealed)", Auth::Kerberos, lab.endpoint()));
        modes.push(("kerberos/https", Auth::Kerberos, https));
    }
    let mut rows = Vec::new();
    for (mode, auth, endpoint) in modes {
        let (user, pw) = match (&kdc, auth) {
            (Some(k), Auth::Kerberos) => (k.user.clone(), k.password.clone()),
            _ => (lab::DEFAULT_USER.to_owned(), password.clone()),
        };
        let mut cc = ClientConfig::new(endpoint.parse()?, user, SecretString::from(pw));
        cc.auth = auth;
        cc.allow_unencrypted = auth == Auth::Basic && endpoint.starts_with("http:");
        cc.ca_file = Some(ca.clone());
        if let Some(k) = &kdc {
            cc.kdc = Some(k.kdc.clone());
            cc.spn = Some(k.spn.clone());
        }
        let client = WinrmClient::new(cc)?;
        // The first shell pays for the connection and the handshake; reported on its own.
        let t = Instant::now();
        client
            .open_shell(&ShellOptions::default())
            .await?
            .close()
            .await?;
        let first_shell_ms = ms(t.elapsed());
        let mut fresh = Vec::with_capacity(shells);
        for _ in 0..shells {
            let t = Instant::now();
            let shell = client.open_shell(&ShellOptions::default()).await?;
            shell.run("hostname", &[], None).await?;
            shell.close().await?;
            fresh.push(ms(t.elapsed()));
        }
        let shell = client.open_shell(&ShellOptions::default()).await?;
        let mut open = Vec::with_capacity(commands);
        for _ in 0..commands {
            let t = Instant::now();
            shell.run("hostname", &[], None).await?;
            open.push(ms(t.elapsed()));
        }
        shell.close().await?;
        let (f, fp) = stats(fresh);
        let (o, op) = stats(open);
        rows.push(Row {
            mode,
            first_shell_ms,
            fresh_shell_ms: f,
            open_shell_ms: o,
            fresh_shell_p95_ms: fp,
            open_shell_p95_ms: op,
        });
    }
    let _ = std::fs::remove_file(&ca);
    let value = serde_json::json!({
        "bench": "winrm",
        "shells": shells,
        "commands": commands,
        "rows": rows,
    });
    if out.emit("winrm", &value)? {
        println!(
            "per-command overhead against the lab (no added latency; {shells} fresh shells, {commands} commands in an open shell)"
        );
        println!(
            "{:<28} {:>15} {:>22} {:>22}",
            "mode", "first shell ms", "open+run+close ms", "run in open shell ms"
        );
        for r in &rows {
            println!(
                "{:<28} {:>15.1} {:>12.2} (p95 {:>5.2}) {:>12.2} (p95 {:>5.2})",
                r.mode,
                r.first_shell_ms,
                r.fresh_shell_ms,
                r.fresh_shell_p95_ms,
                r.open_shell_ms,
                r.open_shell_p95_ms
            );
        }
    }
    Ok(0)
}

fn tempfile_path() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::env::temp_dir().join(format!(
        "mailboxd-bench-winrm-{}.pem",
        uuid::Uuid::new_v4().simple()
    )))
}
