//! `[winrm]` and `[exchange]`: how mailboxd reaches the Windows host, and how the host's
//! PowerShell reaches Exchange (the session mode, the second hop, the budgets).

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WinrmAuth {
    Basic,
    Ntlm,
    Kerberos,
    /// `credssp`: NTLM inside CredSSP, the password delegated to the host (docs/security.md).
    CredSsp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Winrm {
    pub endpoint: String,
    pub auth: WinrmAuth,
    pub username: String,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Basic auth over plain HTTP sends the password in clear text: only with this set.
    pub allow_unencrypted: bool,
    /// WS-Management OperationTimeout for each Receive poll.
    #[serde(with = "humantime_secs")]
    pub operation_timeout: Duration,
    /// Kerberos: the domain's KDC, `tcp://dc1.corp.example:88` (TCP only).
    pub kdc: Option<String>,
    /// Kerberos: the host's service principal; `HTTP/<endpoint host>` when unset.
    pub spn: Option<String>,
    /// CredSSP: SHA-256 fingerprints of the host's CredSSP certificate (`CN=WSMAN-<host>`).
    pub credssp_cert_sha256: Vec<String>,
    /// CredSSP: do not check the host's CredSSP certificate (logged at start-up).
    pub credssp_skip_cert_check: bool,
    #[serde(skip)]
    pub password: Option<SecretString>,
}

impl Winrm {
    /// The WinRM client this section describes, refusing what would be unsafe: Basic over
    /// plain HTTP only with `allow_unencrypted` (NTLM, Kerberos and CredSSP seal every
    /// message; Basic would not).
    pub fn client(&self) -> anyhow::Result<winrm::WinrmClient> {
        use anyhow::Context;
        use winrm::Auth;
        let endpoint = url::Url::parse(&self.endpoint).context("winrm.endpoint")?;
        let password: SecretString = self
            .password
            .clone()
            .context("no WinRM password: set MAILBOXD_WINRM_PASSWORD or winrm.password_file")?;
        let auth = match self.auth {
            WinrmAuth::Basic => Auth::Basic,
            WinrmAuth::Ntlm => Auth::Ntlm,
            WinrmAuth::Kerberos => Auth::Kerberos,
            WinrmAuth::CredSsp => Auth::CredSsp,
        };
        if endpoint.scheme() == "http" && auth == Auth::Basic {
            if self.allow_unencrypted {
                tracing::warn!(endpoint = %endpoint, "winrm.allow_unencrypted is set: the WinRM password and all data cross the network in clear text");
            } else {
                anyhow::bail!(
                    "winrm.endpoint {endpoint} is plain HTTP: use https:// (port 5986), or set winrm.allow_unencrypted = true knowingly"
                );
            }
        }
        let mut cfg = winrm::ClientConfig::new(endpoint, self.username.clone(), password);
        cfg.auth = auth;
        cfg.allow_unencrypted = self.allow_unencrypted;
        cfg.ca_file = self.ca_file.clone();
        cfg.operation_timeout = self.operation_timeout;
        cfg.kdc = self.kdc.clone();
        cfg.spn = self.spn.clone();
        cfg.credssp_cert_sha256 = self.credssp_cert_sha256.clone();
        cfg.credssp_skip_cert_check = self.credssp_skip_cert_check;
        Ok(winrm::WinrmClient::new(cfg)?)
    }
}

/// The host script's contract owns the mode names; the configuration reads them.
pub use ps_templates::ExchangeMode;

/// How the PowerShell process on the Windows host authenticates onwards, to Exchange and the
/// domain controllers (the double hop, docs/operations.md): WinRM's NTLM or Kerberos logon
/// leaves it no credentials of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecondHop {
    /// `exchange.username`/`password_file`: New-PSSession -Credential (remote mode only).
    Credential,
    /// Kerberos constrained delegation configured in AD for the host's computer account.
    Delegation,
    /// CredSSP (`winrm.auth = "credssp"`): the credentials are delegated to the host.
    Credssp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Exchange {
    pub mode: ExchangeMode,
    pub connection_uris: Vec<String>,
    pub view_entire_forest: bool,
    /// Domain of the cloud routing address, e.g. `tenant.mail.onmicrosoft.com`.
    pub remote_routing_domain: String,
    /// Accounts per PowerShell run (amortises the Exchange session set-up).
    /// Long-lived PowerShell processes kept on the host, each with its Exchange session
    /// open, fed batch after batch (0: a new process and session per batch). Keep it below
    /// Exchange's PowerShellMaxConcurrency and WinRM's MaxShellsPerUser.
    pub warm_sessions: usize,
    /// A warm process is replaced after this many batches.
    pub warm_max_requests: u32,
    pub batch_size: u32,
    /// Exchange sessions (each one WinRM shell) open at once across every replica sharing
    /// the database: cold batches and warm processes alike. Keep it below Exchange's
    /// PowerShellMaxConcurrency (18 by default) and WinRM's MaxShellsPerUser (30), leaving
    /// room for people and other tools on the same account.
    pub max_sessions: u32,
    /// A replica's hold on a session slot lasts this long without its heartbeat (renewed
    /// every third of it): a killed replica's slots come back by themselves after it.
    #[serde(with = "humantime_secs")]
    pub session_lease: Duration,
    /// Exchange's PowerShellMaxCmdlets for the service account: cmdlets all replicas run
    /// within `cmdlet_window` (its PowerShellMaxCmdletsTimePeriod). Batches are paced to it
    /// instead of being refused. Unset (Exchange's default is Unlimited): not paced.
    pub max_cmdlets: Option<u32>,
    #[serde(default, with = "humantime_opt")]
    pub cmdlet_window: Option<Duration>,
    /// A batch smaller than `batch_size` waits this long for more jobs before it runs, so a
    /// burst shares Exchange sessions instead of paying one per trickle. 0: run at once.
    #[serde(with = "humantime_secs")]
    pub batch_linger: Duration,
    /// How the second hop is solved; absent: implied by the other settings (an Exchange
    /// credential, or a CredSSP WinRM logon), else mailboxd refuses to start.
    pub second_hop: Option<SecondHop>,
    /// Explicit Exchange credential for `remote` mode (sent on stdin, never on a command line).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(skip)]
    pub password: Option<SecretString>,
    /// A code-signing certificate's thumbprint for Import-PSSession -Certificate, where an
    /// AllSigned execution policy refuses the unsigned temporary module.
    pub signing_certificate_thumbprint: Option<String>,
}

impl Default for Winrm {
    fn default() -> Self {
        Winrm {
            endpoint: "https://127.0.0.1:5986/wsman".into(),
            // A domain account, as a real deployment uses; Kerberos because NTLM is being
            // disabled (docs/operations.md). Needs winrm.kdc.
            auth: WinrmAuth::Kerberos,
            username: "mailboxd".into(),
            password_file: None,
            ca_file: None,
            allow_unencrypted: false,
            operation_timeout: Duration::from_secs(20),
            kdc: None,
            spn: None,
            credssp_cert_sha256: Vec::new(),
            credssp_skip_cert_check: false,
            password: None,
        }
    }
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            // A fresh powershell.exe has no Exchange cmdlets, so "none" cannot be the default.
            mode: ExchangeMode::Remote,
            connection_uris: Vec::new(),
            view_entire_forest: false,
            remote_routing_domain: "tenant.mail.onmicrosoft.com".into(),
            warm_sessions: 0,
            warm_max_requests: 100,
            batch_size: 50,
            max_sessions: 12,
            session_lease: Duration::from_secs(30),
            max_cmdlets: None,
            cmdlet_window: None,
            batch_linger: Duration::from_millis(200),
            second_hop: None,
            username: None,
            password_file: None,
            password: None,
            signing_certificate_thumbprint: None,
        }
    }
}

impl WinrmAuth {
    /// The name `winrm.auth` takes.
    pub fn name(self) -> &'static str {
        match self {
            WinrmAuth::Basic => "basic",
            WinrmAuth::Ntlm => "ntlm",
            WinrmAuth::Kerberos => "kerberos",
            WinrmAuth::CredSsp => "credssp",
        }
    }
}

impl Settings {
    /// An answer to the second hop that works on a real host for this mode and logon
    /// (docs/operations.md, "Which settings work on a real host").
    pub(super) fn validate_second_hop(&self) -> Result<(), ConfigError> {
        use crate::windows_host::{
            BASIC_IS_LOCAL, DELEGATION_IS_NOT_WINRM, SECOND_HOP_REMEDIES as remedies,
        };
        let x = &self.exchange;
        let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
        if x.mode == ExchangeMode::None {
            return Ok(());
        }
        if let Some(p) = &x.password {
            use secrecy::ExposeSecret;
            if let Err(e) = ps_templates::secret_line(Some(p.expose_secret())) {
                return invalid("exchange.password_file", e.to_string());
            }
        }
        let basic = self.winrm.auth == WinrmAuth::Basic;
        match (x.mode, x.second_hop) {
            (ExchangeMode::Snapin, _) if basic => invalid(
                "winrm.auth",
                format!(
                    "{BASIC_IS_LOCAL} The snap-in runs as that logon, so it cannot reach a domain controller. {remedies}"
                ),
            ),
            (ExchangeMode::Remote, _) if basic && x.username.is_none() => invalid(
                "winrm.auth",
                format!(
                    "{BASIC_IS_LOCAL} With Basic, remote mode needs an explicit Exchange credential (exchange.username and exchange.password_file), or use a domain account with winrm.auth = \"kerberos\". {remedies}"
                ),
            ),
            (ExchangeMode::Snapin, Some(SecondHop::Credential)) => invalid(
                "exchange.second_hop",
                format!(
                    "the snap-in runs as the WinRM logon and cannot use an Exchange credential. {remedies}"
                ),
            ),
            (ExchangeMode::Remote, Some(SecondHop::Credential)) if x.username.is_none() => invalid(
                "exchange.username",
                format!(
                    "exchange.second_hop = \"credential\" needs exchange.username and exchange.password_file. {remedies}"
                ),
            ),
            (_, Some(SecondHop::Credssp)) if self.winrm.auth != WinrmAuth::CredSsp => invalid(
                "winrm.auth",
                format!(
                    "exchange.second_hop = \"credssp\" needs winrm.auth = \"credssp\". {remedies}"
                ),
            ),
            (_, Some(SecondHop::Delegation)) if self.winrm.auth != WinrmAuth::Kerberos => invalid(
                "winrm.auth",
                format!(
                    "exchange.second_hop = \"delegation\" needs winrm.auth = \"kerberos\": only a Kerberos logon can be delegated onwards. {remedies}"
                ),
            ),
            (ExchangeMode::Remote, Some(SecondHop::Delegation)) => invalid(
                "exchange.second_hop",
                format!("{DELEGATION_IS_NOT_WINRM} {remedies}"),
            ),
            (_, Some(_)) => Ok(()),
            (mode, None) if self.implied_second_hop().is_none() => invalid(
                "exchange.second_hop",
                format!(
                    "{} mode without an explicit credential cannot reach Exchange from the host: {remedies}",
                    format!("{mode:?}").to_lowercase()
                ),
            ),
            (_, None) => Ok(()),
        }
    }

    /// The answer the other settings already give to the second hop, if any: an Exchange
    /// credential (remote mode) or a CredSSP logon. Not Basic: it logs a local account on,
    /// which has no domain identity to pass on.
    fn implied_second_hop(&self) -> Option<&'static str> {
        if self.exchange.mode == ExchangeMode::Remote && self.exchange.username.is_some() {
            Some("an explicit Exchange credential")
        } else if self.winrm.auth == WinrmAuth::CredSsp {
            Some("CredSSP (the WinRM logon's password is delegated)")
        } else {
            None
        }
    }

    /// Which answer to the second hop is in force, in words (`mailboxd check` prints it).
    pub(crate) fn second_hop_remedy(&self) -> &'static str {
        match (self.exchange.mode, self.exchange.second_hop) {
            (ExchangeMode::None, _) => "none needed (exchange.mode = \"none\")",
            (_, Some(SecondHop::Delegation)) => {
                "Kerberos delegation to the domain controllers configured in AD"
            }
            (ExchangeMode::Remote, Some(SecondHop::Credential)) => {
                "an explicit Exchange credential"
            }
            _ => self
                .implied_second_hop()
                .unwrap_or("none (the daemon refuses this configuration)"),
        }
    }
}
