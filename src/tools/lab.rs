//! `mailboxd lab`: the simulated Windows side as a command (the lab crate does the work).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lab::{Lab, LabConfig};
use secrecy::SecretString;

#[derive(Args, Debug)]
pub struct LabArgs {
    /// Address for the WinRM endpoint (/wsman) and the lab's JSON (/lab/...).
    #[arg(long, default_value = "127.0.0.1:5985")]
    pub listen: SocketAddr,
    /// Address of the lab's domain controller (plain LDAP; the same user and password bind,
    /// as user@corp.example or CORP\\user).
    #[arg(long, default_value = "127.0.0.1:1389")]
    pub ldap_listen: SocketAddr,
    /// The user the WinRM endpoint accepts (HTTP Basic).
    #[arg(long, default_value = lab::DEFAULT_USER)]
    pub user: String,
    /// File holding that user's password. Default: $MAILBOXD_LAB_PASSWORD, else "mailboxd-lab".
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Seed accounts user00001 … userNNNNN (plain AD users, no mailbox).
    #[arg(long, default_value_t = 100)]
    pub accounts: usize,
    /// More accounts, one JSON object per line: sam_account_name, user_principal_name,
    /// disabled, object_guid, recipient (none|remote|onprem), hidden, synced.
    #[arg(long)]
    pub accounts_file: Option<PathBuf>,
    /// Time to open an Exchange session (per PowerShell run), e.g. 2s.
    #[arg(long, default_value = "0s", value_parser = parse_dur)]
    pub session_latency: std::time::Duration,
    /// Time per cmdlet, e.g. 50ms.
    #[arg(long, default_value = "0s", value_parser = parse_dur)]
    pub cmdlet_latency: std::time::Duration,
    /// Time per WinRM request (the network and the WinRM service), e.g. 5ms.
    #[arg(long, default_value = "0s", value_parser = parse_dur)]
    pub winrm_latency: std::time::Duration,
    /// WinRM MaxShellsPerUser.
    #[arg(long, default_value_t = 30)]
    pub max_shells_per_user: usize,
    /// Exchange PowerShellMaxConcurrency: open Exchange sessions per user.
    #[arg(long, default_value_t = 18)]
    pub max_exchange_sessions: usize,
    /// Exchange PowerShellMaxCmdlets per PowerShellMaxCmdletsTimePeriod, e.g. 100/10s.
    #[arg(long, value_parser = parse_budget)]
    pub cmdlet_budget: Option<(u32, std::time::Duration)>,
    /// Faults in force from the start: JSON lines, each one body of POST /lab/faults.
    #[arg(long)]
    pub faults_file: Option<PathBuf>,
    /// WinRM MaxEnvelopeSizekb: larger requests get HTTP 413.
    #[arg(long, default_value_t = 500)]
    pub max_envelope_kb: usize,
    /// Also serve WinRM over HTTPS here (Windows' 5986), on a fresh self-signed certificate.
    #[arg(long)]
    pub tls_listen: Option<SocketAddr>,
    /// Write that certificate (PEM) here, for clients' ca_file.
    #[arg(long, requires = "tls_listen")]
    pub tls_cert_out: Option<PathBuf>,
    /// Require NTLM channel binding on the HTTPS listener (CbtHardeningLevel Strict).
    #[arg(long)]
    pub strict_channel_binding: bool,
    /// Accept Kerberos with the SPN's key from this keytab (`samba-tool domain exportkeytab`).
    #[arg(long)]
    pub kerberos_keytab: Option<PathBuf>,
    /// The lab's SPN in that keytab.
    #[arg(long, default_value = "HTTP/lab.corp.example")]
    pub kerberos_spn: String,
    /// Kerberos accounts allowed in (Remote Management Users); default: --user.
    #[arg(long)]
    pub kerberos_user: Vec<String>,
}

fn parse_budget(s: &str) -> Result<(u32, std::time::Duration), String> {
    let (n, w) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected CMDLETS/WINDOW, e.g. 100/10s"))?;
    let n = n.trim().parse::<u32>().map_err(|e| format!("{n:?}: {e}"))?;
    Ok((n, crate::config::parse_duration(w.trim())?))
}

fn parse_dur(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

pub async fn run(args: LabArgs) -> anyhow::Result<i32> {
    let password = match &args.password_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading --password-file {}", p.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => std::env::var("MAILBOXD_LAB_PASSWORD").unwrap_or_else(|_| "mailboxd-lab".into()),
    };
    let mut accounts = lab::directory::seeded(args.accounts);
    if let Some(path) = &args.accounts_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --accounts-file {}", path.display()))?;
        let added = lab::directory::parse_accounts_file_beside(&accounts, &text)
            .map_err(|e| anyhow::anyhow!("--accounts-file {}: {e}", path.display()))?;
        accounts.extend(added);
    }
    let n = accounts.len();
    let mut faults = Vec::new();
    if let Some(path) = &args.faults_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --faults-file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            faults.push(
                serde_json::from_str::<lab::FaultRequest>(line).map_err(|e| {
                    anyhow::anyhow!("--faults-file {} line {}: {e}", path.display(), i + 1)
                })?,
            );
        }
    }
    let kerberos = match &args.kerberos_keytab {
        None => None,
        Some(path) => {
            let data = std::fs::read(path)
                .with_context(|| format!("reading --kerberos-keytab {}", path.display()))?;
            let entries = winrm::acceptor::read_keytab(&data)
                .map_err(|e| anyhow::anyhow!("--kerberos-keytab {}: {e}", path.display()))?;
            let key =
                winrm::acceptor::service_key(&entries, &args.kerberos_spn).with_context(|| {
                    format!(
                        "--kerberos-keytab {} has no AES key for {}",
                        path.display(),
                        args.kerberos_spn
                    )
                })?;
            Some(lab::wsman::LabKerberos {
                spn: args.kerberos_spn.clone(),
                key,
                allowed: if args.kerberos_user.is_empty() {
                    vec![args.user.clone()]
                } else {
                    args.kerberos_user.clone()
                },
            })
        }
    };
    let lab = Lab::start(LabConfig {
        listen: args.listen,
        user: args.user.clone(),
        password: SecretString::from(password),
        ldap_password: None,
        accounts,
        latency: lab::Latency {
            session: args.session_latency,
            cmdlet: args.cmdlet_latency,
            round_trip: args.winrm_latency,
        },
        max_shells_per_user: args.max_shells_per_user,
        ldap_listen: Some(args.ldap_listen),
        throttle: lab::Throttle {
            max_sessions_per_user: args.max_exchange_sessions,
            cmdlet_budget: args.cmdlet_budget,
        },
        faults,
        max_envelope_kb: args.max_envelope_kb,
        tls_listen: args.tls_listen,
        tls_cert_out: args.tls_cert_out.clone(),
        cbt_hardening: if args.strict_channel_binding {
            winrm::acceptor::CbtHardening::Strict
        } else {
            winrm::acceptor::CbtHardening::Relaxed
        },
        kerberos,
    })
    .await
    .with_context(|| format!("binding {} and {}", args.listen, args.ldap_listen))?;
    println!(
        "mailboxd lab: WinRM at {} (user {}), LDAP at ldap://{} (base {}), {n} accounts; state at http://{}/lab/mailboxes and /lab/invocations",
        lab.endpoint(),
        args.user,
        args.ldap_listen,
        lab::directory::LAB_BASE_DN,
        lab.addr
    );
    if let Some(tls) = lab.tls_endpoint() {
        println!(
            "mailboxd lab: WinRM over HTTPS at {tls}{}",
            args.tls_cert_out
                .as_ref()
                .map(|p| format!(" (certificate in {})", p.display()))
                .unwrap_or_default()
        );
    }
    tokio::select! {
        _ = lab.wait() => {}
        _ = crate::signal::shutdown() => {}
    }
    Ok(0)
}
