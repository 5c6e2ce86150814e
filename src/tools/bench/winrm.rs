//! `mailboxd bench winrm`: what each way of reaching the host costs per command, against a
//! lab with no added latency — a new shell per command (open, run, close) and a command in a
//! shell that is already open — for Basic and NTLM (and Kerberos, given a KDC) over HTTP
//! and HTTPS.

use std::path::{Path, PathBuf};
use std::time::Instant;

use secrecy::SecretString;
use serde::Serialize;

use super::output::{Output, mean_and_p95, ms};
use lab::{self, LOOPBACK_ANY_PORT, Lab, LabConfig};
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

/// One way of reaching the host: its name in the table, the authentication, the endpoint.
struct Mode {
    name: &'static str,
    auth: Auth,
    endpoint: String,
}

/// A KDC to measure Kerberos against, from a file of `KEY=value` lines as
/// `deploy/dev/samba-ad.sh` writes them (`MAILBOXD_TEST_KRB_*` in its `ad.env`).
struct Kdc {
    kdc: String,
    spn: String,
    keytab: PathBuf,
    user: String,
    password: String,
}

fn read_kdc(path: &Path) -> anyhow::Result<Kdc> {
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

pub(crate) async fn run(
    shells: usize,
    commands: usize,
    kerberos_env: Option<&Path>,
    out: &Output,
) -> anyhow::Result<i32> {
    let ca = tempfile_path();
    let password = uuid::Uuid::new_v4().simple().to_string();
    let kdc = kerberos_env.map(read_kdc).transpose()?;
    let lab = Lab::start(lab_config(&password, &ca, kdc.as_ref())?).await?;
    let mut rows = Vec::new();
    for mode in modes(&lab, kdc.is_some())? {
        let client = match (&lab.credssp_cert_sha256, mode.auth) {
            (Some(pin), Auth::CredSsp) => credssp_client(&mode, &password, &ca, pin)?,
            _ => client(&mode, &password, &ca, kdc.as_ref())?,
        };
        rows.push(measure(mode.name, &client, shells, commands).await?);
    }
    let _ = std::fs::remove_file(&ca);
    let value = serde_json::json!({
        "bench": "winrm",
        "shells": shells,
        "commands": commands,
        "rows": rows,
    });
    if out.emit("winrm", &value)? {
        print_table(&rows, shells, commands);
    }
    Ok(0)
}

/// A lab with an HTTPS listener whose certificate goes to `ca`, and Kerberos with the
/// KDC's keytab when one is given.
fn lab_config(password: &str, ca: &Path, kdc: Option<&Kdc>) -> anyhow::Result<LabConfig> {
    let kerberos = match kdc {
        Some(k) => {
            let entries = winrm::acceptor::read_keytab(&std::fs::read(&k.keytab)?)
                .map_err(anyhow::Error::msg)?;
            let key = winrm::acceptor::service_key(&entries, &k.spn)
                .ok_or_else(|| anyhow::anyhow!("no AES key for {} in the keytab", k.spn))?;
            let account = k.user.split('@').next().unwrap_or(&k.user).to_owned();
            Some(lab::wsman::LabKerberos {
                spn: k.spn.clone(),
                key,
                allowed: vec![account],
                service_logon: None,
            })
        }
        None => None,
    };
    Ok(LabConfig::new(
        LOOPBACK_ANY_PORT,
        lab::DEFAULT_USER,
        SecretString::from(password.to_owned()),
    )
    .with_tls(LOOPBACK_ANY_PORT, Some(ca.to_owned()))
    .with_kerberos(kerberos)
    .with_credssp(true))
}

/// Basic and NTLM over HTTP and HTTPS; Kerberos too when there is a KDC.
fn modes(lab: &Lab, kerberos: bool) -> anyhow::Result<Vec<Mode>> {
    let https = lab
        .tls_endpoint()
        .ok_or_else(|| anyhow::anyhow!("the lab has no TLS listener"))?;
    let mode = |name, auth, endpoint: &String| Mode {
        name,
        auth,
        endpoint: endpoint.clone(),
    };
    let http = lab.endpoint();
    let mut modes = vec![
        mode("basic/http", Auth::Basic, &http),
        mode("basic/https", Auth::Basic, &https),
        mode("ntlm/http (sealed)", Auth::Ntlm, &http),
        mode("ntlm/https (channel-bound)", Auth::Ntlm, &https),
        mode("credssp/http (encrypted)", Auth::CredSsp, &http),
        mode("credssp/https", Auth::CredSsp, &https),
    ];
    if kerberos {
        modes.push(mode("kerberos/http (sealed)", Auth::Kerberos, &http));
        modes.push(mode("kerberos/https", Auth::Kerberos, &https));
    }
    Ok(modes)
}

/// A client for `mode`: the lab's user, or the KDC's for Kerberos.
fn client(
    mode: &Mode,
    password: &str,
    ca: &Path,
    kdc: Option<&Kdc>,
) -> anyhow::Result<WinrmClient> {
    let (user, pw) = match (kdc, mode.auth) {
        (Some(k), Auth::Kerberos) => (k.user.clone(), k.password.clone()),
        _ => (lab::DEFAULT_USER.to_owned(), password.to_owned()),
    };
    let mut cc = ClientConfig::new(mode.endpoint.parse()?, user, SecretString::from(pw));
    cc.auth = mode.auth;
    cc.allow_unencrypted = mode.auth == Auth::Basic && mode.endpoint.starts_with("http:");
    cc.ca_file = Some(ca.to_owned());
    if let Some(k) = kdc {
        cc.kdc = Some(k.kdc.clone());
        cc.spn = Some(k.spn.clone());
    }
    Ok(WinrmClient::new(cc)?)
}

/// A CredSSP client pinning the lab's CredSSP certificate.
fn credssp_client(
    mode: &Mode,
    password: &str,
    ca: &Path,
    pin: &str,
) -> anyhow::Result<WinrmClient> {
    let mut cc = ClientConfig::new(
        mode.endpoint.parse()?,
        lab::DEFAULT_USER,
        SecretString::from(password.to_owned()),
    );
    cc.auth = Auth::CredSsp;
    cc.ca_file = Some(ca.to_owned());
    cc.credssp_cert_sha256 = vec![pin.to_owned()];
    Ok(WinrmClient::new(cc)?)
}

/// The first shell, then `shells` fresh shells each running `hostname`, then `commands`
/// runs of `hostname` in one open shell.
async fn measure(
    mode: &'static str,
    client: &WinrmClient,
    shells: usize,
    commands: usize,
) -> anyhow::Result<Row> {
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
    let (fresh_shell_ms, fresh_shell_p95_ms) = mean_and_p95(fresh);
    let (open_shell_ms, open_shell_p95_ms) = mean_and_p95(open);
    Ok(Row {
        mode,
        first_shell_ms,
        fresh_shell_ms,
        open_shell_ms,
        fresh_shell_p95_ms,
        open_shell_p95_ms,
    })
}

fn print_table(rows: &[Row], shells: usize, commands: usize) {
    println!(
        "per-command overhead against the lab (no added latency; {shells} fresh shells, {commands} commands in an open shell)"
    );
    println!(
        "{:<28} {:>15} {:>22} {:>22}",
        "mode", "first shell ms", "open+run+close ms", "run in open shell ms"
    );
    for r in rows {
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

fn tempfile_path() -> PathBuf {
    std::env::temp_dir().join(format!(
        "mailboxd-bench-winrm-{}.pem",
        uuid::Uuid::new_v4().simple()
    ))
}
