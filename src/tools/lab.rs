//! `mailboxd lab`: the simulated Windows side as a command (the lab crate does the work).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Run an Entra sync cycle (with Exchange Online's provisioning and the hybrid writeback
    /// to the lab's AD) this often, e.g. 30s; without it the cloud syncs only on
    /// `POST /lab/cloud/sync`.
    #[arg(long, value_parser = parse_dur)]
    pub cloud_sync_interval: Option<std::time::Duration>,
    /// How long after a cycle first sees a user synced, licensed and with its remote
    /// mailbox Exchange Online makes the mailbox.
    #[arg(long, default_value = "0s", value_parser = parse_dur)]
    pub cloud_mailbox_delay: std::time::Duration,
    /// An account licensed for Exchange Online from the start (repeat it); more with
    /// `POST /lab/cloud/users`. A licence before the remote mailbox makes EXO create a
    /// mailbox of its own (the licence-first trap).
    #[arg(long)]
    pub cloud_licensed: Vec<String>,
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
    /// Accept and offer CredSSP on both listeners (off by default, as on Windows).
    #[arg(long)]
    pub credssp: bool,
    /// The host is trusted for delegation in AD: a Kerberos logon's LDAP hop (snapin mode)
    /// works; WinRM's second hop to Exchange does not (only CredSSP or an explicit
    /// exchange credential make that one).
    #[arg(long)]
    pub trusted_for_delegation: bool,
    /// Group Policy "Allow Remote Shell Access" is Disabled (CIS hardening): every shell is
    /// refused.
    #[arg(long)]
    pub remote_shells_disabled: bool,
    /// Group Policy "Network security: Restrict NTLM: Incoming NTLM traffic" = Deny all
    /// accounts: NTLM is refused inside Negotiate and inside CredSSP; Kerberos still works.
    #[arg(long)]
    pub deny_ntlm: bool,
    /// The WinRM account is in neither "Recipient Management EMT" nor Domain Admins: in
    /// snapin mode every write fails with insufficient access rights.
    #[arg(long)]
    pub emt_missing: bool,
    /// The Exchange connection URIs name a load-balanced namespace without an alternate
    /// service account: Kerberos to Exchange fails with 0x80090322.
    #[arg(long)]
    pub load_balanced_without_asa: bool,
    /// Group Policy sets the execution policy to AllSigned: Import-PSSession is refused.
    #[arg(long)]
    pub all_signed: bool,
    /// PowerShell runs in Constrained Language Mode: the bootstrap is refused.
    #[arg(long)]
    pub constrained_language: bool,
    /// How long Exchange keeps a session nobody removed.
    #[arg(long, default_value = "15m", value_parser = parse_dur)]
    pub session_idle_timeout: std::time::Duration,
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
    let cfg = lab_config(&args)?;
    let accounts = cfg.accounts.len();
    let mut lab = Lab::start(cfg)
        .await
        .with_context(|| format!("binding {} and {}", args.listen, args.ldap_listen))?;
    print_addresses(&lab, &args, accounts);
    tokio::select! {
        _ = lab.wait() => {}
        _ = crate::signal::stop_requested() => {}
    }
    Ok(0)
}

/// The lab the command line asks for, with its files read.
fn lab_config(args: &LabArgs) -> anyhow::Result<LabConfig> {
    let mut accounts = lab::directory::seeded(args.accounts);
    if let Some(path) = &args.accounts_file {
        let added = read_accounts_file(path, &accounts)?;
        accounts.extend(added);
    }
    let faults = match &args.faults_file {
        Some(path) => read_faults_file(path)?,
        None => Vec::new(),
    };
    let kerberos = match &args.kerberos_keytab {
        Some(path) => Some(read_kerberos(path, args)?),
        None => None,
    };
    let cbt = if args.strict_channel_binding {
        winrm::acceptor::CbtHardening::Strict
    } else {
        winrm::acceptor::CbtHardening::Relaxed
    };
    let mut cfg = LabConfig::new(args.listen, args.user.clone(), read_password(args)?)
        .with_directory(args.ldap_listen)
        .with_accounts(accounts)
        .with_latency(lab::Latency {
            session: args.session_latency,
            cmdlet: args.cmdlet_latency,
            round_trip: args.winrm_latency,
        })
        .with_max_shells_per_user(args.max_shells_per_user)
        .with_throttle(lab::Throttle {
            max_sessions_per_user: args.max_exchange_sessions,
            cmdlet_budget: args.cmdlet_budget,
        })
        .with_faults(faults)
        .with_max_envelope_kb(args.max_envelope_kb)
        .with_cbt_hardening(cbt)
        .with_kerberos(kerberos)
        .with_credssp(args.credssp)
        .with_delegation(args.trusted_for_delegation)
        .with_remote_shells_disabled(args.remote_shells_disabled)
        .with_ntlm_denied(args.deny_ntlm)
        .with_emt_missing(args.emt_missing)
        .with_load_balanced_without_asa(args.load_balanced_without_asa)
        .with_all_signed(args.all_signed)
        .with_constrained_language(args.constrained_language)
        .with_session_idle_timeout(args.session_idle_timeout)
        .with_cloud(lab::cloud::CloudConfig {
            mailbox_delay: args.cloud_mailbox_delay,
            sync_interval: args.cloud_sync_interval,
            licensed: args.cloud_licensed.clone(),
        });
    if let Some(listen) = args.tls_listen {
        cfg = cfg.with_tls(listen, args.tls_cert_out.clone());
    }
    Ok(cfg)
}

/// `--password-file`, else `$MAILBOXD_LAB_PASSWORD`, else the lab's well-known default.
fn read_password(args: &LabArgs) -> anyhow::Result<SecretString> {
    let password = match &args.password_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading --password-file {}", p.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        None => std::env::var("MAILBOXD_LAB_PASSWORD").unwrap_or_else(|_| "mailboxd-lab".into()),
    };
    Ok(SecretString::from(password))
}

/// The accounts of `--accounts-file`, each refused as AD would refuse it beside `existing`.
fn read_accounts_file(
    path: &Path,
    existing: &[lab::AccountSeed],
) -> anyhow::Result<Vec<lab::AccountSeed>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --accounts-file {}", path.display()))?;
    lab::directory::parse_accounts_file_beside(existing, &text)
        .map_err(|e| anyhow::anyhow!("--accounts-file {}: {e}", path.display()))
}

/// One fault request per line; blank lines and `#` comments skipped.
fn read_faults_file(path: &Path) -> anyhow::Result<Vec<lab::FaultRequest>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --faults-file {}", path.display()))?;
    let mut faults = Vec::new();
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
    Ok(faults)
}

/// The SPN's key from `--kerberos-keytab`, and who may log on with Kerberos.
fn read_kerberos(path: &Path, args: &LabArgs) -> anyhow::Result<lab::wsman::LabKerberos> {
    let data = std::fs::read(path)
        .with_context(|| format!("reading --kerberos-keytab {}", path.display()))?;
    let entries = winrm::acceptor::read_keytab(&data)
        .map_err(|e| anyhow::anyhow!("--kerberos-keytab {}: {e}", path.display()))?;
    let key = winrm::acceptor::service_key(&entries, &args.kerberos_spn).with_context(|| {
        format!(
            "--kerberos-keytab {} has no AES key for {}",
            path.display(),
            args.kerberos_spn
        )
    })?;
    Ok(lab::wsman::LabKerberos {
        spn: args.kerberos_spn.clone(),
        key,
        allowed: if args.kerberos_user.is_empty() {
            vec![args.user.clone()]
        } else {
            args.kerberos_user.clone()
        },
        service_logon: None,
    })
}

fn print_addresses(lab: &Lab, args: &LabArgs, accounts: usize) {
    println!(
        "mailboxd lab: WinRM at {} (user {}), LDAP at ldap://{} (base {}), {accounts} accounts; state at http://{}/lab/mailboxes and /lab/invocations",
        lab.endpoint(),
        args.user,
        args.ldap_listen,
        lab::directory::LAB_BASE_DN,
        lab.addr
    );
    if let Some(pin) = &lab.credssp_cert_sha256 {
        println!("mailboxd lab: CredSSP on; winrm.credssp_cert_sha256 = \"{pin}\"");
    }
    if let Some(tls) = lab.tls_endpoint() {
        println!(
            "mailboxd lab: WinRM over HTTPS at {tls}{}",
            args.tls_cert_out
                .as_ref()
                .map(|p| format!(" (certificate in {})", p.display()))
                .unwrap_or_default()
        );
    }
}
