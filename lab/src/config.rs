//! What a lab serves and how it behaves, built one way: [`LabConfig::new`] or
//! [`LabConfig::loopback`], then `with_*` for whatever differs from Windows' defaults.

use std::net::SocketAddr;

use secrecy::SecretString;

use crate::cloud::CloudConfig;
use crate::{AccountSeed, DEFAULT_USER, FaultRequest, HostPolicy, Latency, Throttle, wsman};

/// A lab's configuration (see the module docs for how to build one).
pub struct LabConfig {
    pub listen: SocketAddr,
    pub user: String,
    pub password: SecretString,
    /// The password the domain controller accepts for `user`; `None`: the same as WinRM's.
    pub ldap_password: Option<SecretString>,
    pub accounts: Vec<AccountSeed>,
    pub latency: Latency,
    pub max_shells_per_user: usize,
    /// The lab's domain controller (LDAP); `None`: no directory served.
    pub ldap_listen: Option<SocketAddr>,
    /// Exchange's throttling policy.
    pub throttle: Throttle,
    /// Faults in force from the start (`--faults-file`).
    pub faults: Vec<FaultRequest>,
    /// MaxEnvelopeSizekb (Windows' default is 500).
    pub max_envelope_kb: usize,
    /// A second WinRM listener with TLS (Windows' 5986), on a fresh self-signed certificate.
    pub tls_listen: Option<SocketAddr>,
    /// Where to write that certificate (PEM) so clients can trust it.
    pub tls_cert_out: Option<std::path::PathBuf>,
    /// CbtHardeningLevel of the TLS listener.
    pub cbt_hardening: winrm::acceptor::CbtHardening,
    /// Kerberos accepted on both listeners when set.
    pub kerberos: Option<wsman::LabKerberos>,
    /// CredSSP accepted and offered on both listeners (Windows' default: off).
    pub credssp: bool,
    /// The host is trusted for (constrained) delegation in AD: a Kerberos logon can make the
    /// second hop. Off, as on a host nobody configured.
    pub trusted_for_delegation: bool,
    /// The host's execution policy, language mode and Exchange session idle timeout.
    pub host_policy: HostPolicy,
    /// Group Policy "Allow Remote Shell Access" = Disabled (CIS-hardened hosts): every shell
    /// is refused.
    pub remote_shells_disabled: bool,
    /// Group Policy "Network security: Restrict NTLM: Incoming NTLM traffic" = Deny all
    /// accounts: NTLM is refused inside Negotiate and inside CredSSP; Kerberos still works.
    pub deny_ntlm: bool,
    /// Other domain accounts (name, password) an explicit Exchange credential may name,
    /// besides `user` with its domain password.
    pub domain_accounts: Vec<(String, SecretString)>,
    /// The simulated Entra sync and Exchange Online (`cloud`).
    pub cloud: CloudConfig,
}

/// `127.0.0.1:0`: a free loopback port, picked when the lab binds.
pub const LOOPBACK_ANY_PORT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    0,
));

/// The fields stay public for the rare case no builder method covers.
impl LabConfig {
    /// A lab on `listen` with one account and password, no directory, no faults, Windows'
    /// defaults (MaxShellsPerUser 30, MaxEnvelopeSizekb 500, relaxed channel binding).
    pub fn new(listen: SocketAddr, user: impl Into<String>, password: SecretString) -> LabConfig {
        LabConfig {
            listen,
            user: user.into(),
            password,
            accounts: Vec::new(),
            latency: Latency::default(),
            max_shells_per_user: 30,
            ldap_listen: None,
            throttle: Throttle::default(),
            faults: Vec::new(),
            max_envelope_kb: 500,
            tls_listen: None,
            tls_cert_out: None,
            cbt_hardening: Default::default(),
            ldap_password: None,
            kerberos: None,
            credssp: false,
            trusted_for_delegation: false,
            host_policy: HostPolicy::default(),
            domain_accounts: Vec::new(),
            remote_shells_disabled: false,
            cloud: CloudConfig::default(),
            deny_ntlm: false,
        }
    }

    /// What demos, benchmarks and tests start from: WinRM on a free loopback port for
    /// [`DEFAULT_USER`] with `password`, and its domain controller on another one.
    pub fn loopback(password: SecretString) -> LabConfig {
        LabConfig::new(LOOPBACK_ANY_PORT, DEFAULT_USER, password).with_directory(LOOPBACK_ANY_PORT)
    }

    /// The accounts the directory starts with.
    pub fn with_accounts(mut self, accounts: Vec<AccountSeed>) -> LabConfig {
        self.accounts = accounts;
        self
    }

    pub fn with_latency(mut self, latency: Latency) -> LabConfig {
        self.latency = latency;
        self
    }

    /// WinRM's MaxShellsPerUser.
    pub fn with_max_shells_per_user(mut self, n: usize) -> LabConfig {
        self.max_shells_per_user = n;
        self
    }

    /// Serves the domain controller (LDAP) on `listen`.
    pub fn with_directory(mut self, listen: SocketAddr) -> LabConfig {
        self.ldap_listen = Some(listen);
        self
    }

    /// Serves no domain controller: WinRM only.
    pub fn without_directory(mut self) -> LabConfig {
        self.ldap_listen = None;
        self
    }

    /// A password for the domain controller other than WinRM's.
    pub fn with_ldap_password(mut self, password: SecretString) -> LabConfig {
        self.ldap_password = Some(password);
        self
    }

    /// Exchange's throttling policy.
    pub fn with_throttle(mut self, throttle: Throttle) -> LabConfig {
        self.throttle = throttle;
        self
    }

    /// Faults in force from the start.
    pub fn with_faults(mut self, faults: Vec<FaultRequest>) -> LabConfig {
        self.faults = faults;
        self
    }

    /// MaxEnvelopeSizekb.
    pub fn with_max_envelope_kb(mut self, kb: usize) -> LabConfig {
        self.max_envelope_kb = kb;
        self
    }

    /// A second WinRM listener with TLS on `listen`, its certificate written to `cert_out`.
    pub fn with_tls(
        mut self,
        listen: SocketAddr,
        cert_out: Option<std::path::PathBuf>,
    ) -> LabConfig {
        self.tls_listen = Some(listen);
        self.tls_cert_out = cert_out;
        self
    }

    /// CbtHardeningLevel of the TLS listener.
    pub fn with_cbt_hardening(mut self, level: winrm::acceptor::CbtHardening) -> LabConfig {
        self.cbt_hardening = level;
        self
    }

    /// Kerberos accepted on both listeners (`None`: not offered).
    pub fn with_kerberos(mut self, kerberos: Option<wsman::LabKerberos>) -> LabConfig {
        self.kerberos = kerberos;
        self
    }

    /// CredSSP on both listeners (`Enable-WSManCredSSP -Role Server`), on a fresh RSA
    /// `CN=WSMAN-<host>` certificate made at start.
    pub fn with_credssp(mut self, on: bool) -> LabConfig {
        self.credssp = on;
        self
    }

    /// The host's computer account is trusted for delegation (resource-based or classic
    /// constrained delegation to Exchange and the DCs): Kerberos logons reach the second hop.
    pub fn with_delegation(mut self, trusted: bool) -> LabConfig {
        self.trusted_for_delegation = trusted;
        self
    }

    /// Group Policy sets the execution policy to AllSigned (`-ExecutionPolicy Bypass` loses).
    pub fn with_all_signed(mut self, all_signed: bool) -> LabConfig {
        self.host_policy.all_signed = all_signed;
        self
    }

    /// The WinRM account is not in "Recipient Management EMT" (nor Domain Admins): in
    /// `snapin` mode every write fails with insufficient access rights.
    pub fn with_emt_missing(mut self, missing: bool) -> LabConfig {
        self.host_policy.emt_missing = missing;
        self
    }

    /// The connection URIs name a load-balanced namespace without an alternate service
    /// account: Kerberos to Exchange fails with SEC_E_WRONG_PRINCIPAL (0x80090322).
    pub fn with_load_balanced_without_asa(mut self, on: bool) -> LabConfig {
        self.host_policy.load_balanced_without_asa = on;
        self
    }

    /// WDAC/AppLocker puts PowerShell in Constrained Language Mode.
    pub fn with_constrained_language(mut self, constrained: bool) -> LabConfig {
        self.host_policy.constrained_language = constrained;
        self
    }

    /// The host denies incoming NTLM ("Restrict NTLM: Incoming NTLM traffic" = Deny all
    /// accounts, what Microsoft's roadmap makes the default): only Kerberos logs on.
    pub fn with_ntlm_denied(mut self, denied: bool) -> LabConfig {
        self.deny_ntlm = denied;
        self
    }

    /// Group Policy "Allow Remote Shell Access" is Disabled: every shell is refused.
    pub fn with_remote_shells_disabled(mut self, disabled: bool) -> LabConfig {
        self.remote_shells_disabled = disabled;
        self
    }

    /// Another domain account (its name without the domain) an explicit Exchange credential
    /// may name, e.g. a dedicated Exchange service account.
    pub fn with_domain_account(
        mut self,
        user: impl Into<String>,
        password: SecretString,
    ) -> LabConfig {
        self.domain_accounts.push((user.into(), password));
        self
    }

    /// The domain accounts an Exchange credential may name: `user` with its domain password,
    /// and those added.
    pub(crate) fn all_domain_accounts(&self) -> Vec<(String, SecretString)> {
        let own = (
            self.user.clone(),
            self.ldap_password.clone().unwrap_or(self.password.clone()),
        );
        std::iter::once(own)
            .chain(self.domain_accounts.iter().cloned())
            .collect()
    }

    /// How long Exchange keeps a session nobody removed (tests use a short one).
    pub fn with_session_idle_timeout(mut self, idle: std::time::Duration) -> LabConfig {
        self.host_policy.session_idle_timeout = idle;
        self
    }

    /// How the lab's cloud behaves: licences from the start, EXO's delay, a sync schedule.
    pub fn with_cloud(mut self, cloud: CloudConfig) -> LabConfig {
        self.cloud = cloud;
        self
    }
}
