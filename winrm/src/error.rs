//! WinRM errors, typed so the worker can tell "try again" from "fix the configuration".

/// The fault a host reports is part of the protocol (`soap`); the error that sorts it is here.
pub use crate::soap::WsmanFault;
use crate::soap::{
    CODE_ACCESS_DENIED, CODE_ENVELOPE_TOO_LARGE, CODE_INVALID_SELECTORS, CODE_OPERATION_TIMEOUT,
    CODE_QUOTA_LIMIT,
};

#[derive(Debug, thiserror::Error)]
pub enum WinrmError {
    #[error("WinRM configuration: {0}")]
    Config(String),
    #[error(
        "nothing accepts connections at the WinRM endpoint ({0}): check that the WinRM service runs on the host, the port (5985 http, 5986 https) and its firewall"
    )]
    Refused(String),
    #[error(
        "cannot reach the WinRM host: {0} (check winrm.endpoint's name in DNS, the network path and the firewall)"
    )]
    Unreachable(String),
    #[error(
        "TLS with the WinRM host failed: {0} (the certificate must name the endpoint's host and chain to the system roots or winrm.ca_file)"
    )]
    Tls(String),
    #[error("the WinRM host did not answer in time; it may be overloaded — the job is retried")]
    Timeout,
    #[error(
        "the WinRM host refused the credentials (HTTP 401): check winrm.username, the password and winrm.auth"
    )]
    Unauthorized,
    #[error(
        "the WinRM host authenticated the account but denied access ({0}): add it to Remote Management Users, or to the session configuration's permissions"
    )]
    AccessDenied(WsmanFault),
    #[error(
        "the account has used up its WinRM shells ({0}): mailboxd retries later; if this persists, lower the number of warm sessions/workers or raise Winrs MaxShellsPerUser, and look for leaked shells"
    )]
    ShellQuota(WsmanFault),
    #[error(
        "the shell or command is gone on the host ({0}): it expired, was deleted or the host restarted; a new shell is opened"
    )]
    ShellGone(WsmanFault),
    #[error(
        "the request exceeded the host's MaxEnvelopeSizekb ({0}): lower winrm.max_envelope_size or raise MaxEnvelopeSizekb on the host"
    )]
    EnvelopeTooLarge(String),
    #[error("the host's OperationTimeout passed with no output ({0})")]
    OperationTimeout(WsmanFault),
    #[error("WinRM message encryption: {0}")]
    Encryption(String),
    #[error("Kerberos logon failed: {0} ({advice})", advice = kerberos_advice(.0))]
    Kerberos(String),
    #[error(
        "the WinRM host does not offer CredSSP (it offers {0}): on the host run `Enable-WSManCredSSP -Role Server` (winrm/config/service/auth CredSSP=true), or choose another winrm.auth"
    )]
    CredSspNotOffered(String),
    #[error("CredSSP with the WinRM host failed: {0}")]
    CredSsp(String),
    #[error(
        "the domain denies NTLM ({0}; Group Policy \"Network security: Restrict NTLM: Incoming NTLM traffic\", which Microsoft's roadmap makes the default): use winrm.auth = kerberos with winrm.kdc, or, for CredSSP, set winrm.kdc (and winrm.spn) so CredSSP logs on with Kerberos"
    )]
    NtlmBlocked(String),
    #[error(
        "the WinRM host refused the NTLM logon (HTTP 401): either the password of winrm.username is wrong, or the host denies NTLM (Group Policy \"Network security: Restrict NTLM: Incoming NTLM traffic\" — over HTTP Windows answers both with the same 401). Kerberos works in both cases and is what to use as NTLM is retired: winrm.auth = kerberos with winrm.kdc"
    )]
    NtlmRefused,
    #[error("the WinRM host answered HTTP {status}: {body_excerpt}")]
    Http { status: u16, body_excerpt: String },
    #[error(
        "the Windows host refuses every remote shell ({0}): its Group Policy \"Allow Remote Shell Access\" (Computer Configuration > Administrative Templates > Windows Components > Windows Remote Shell) is Disabled, as CIS Level 2 hardening sets it; mailboxd runs PowerShell through a remote shell, so set it to Enabled or Not Configured for mailboxd's host (or exempt that host from the hardening GPO)"
    )]
    ShellsNotAllowed(WsmanFault),
    #[error("WS-Management fault: {0}")]
    Fault(WsmanFault),
    #[error("unexpected WinRM reply: {0}")]
    Protocol(String),
}

/// A KDC's refusal an administrator must mend (RFC 4120 §7.5.9): retrying only sends another
/// bad pre-authentication, which counts toward AD's account lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdcRefusal {
    /// KDC_ERR_PREAUTH_FAILED (24): the password is wrong.
    PreauthFailed,
    /// KDC_ERR_ETYPE_NOSUPP (14): no AES key for the account (a password older than AES, or
    /// an RC4-only account since the RC4 hardening).
    EtypeNotSupported,
    /// KRB_AP_ERR_SKEW (37): this machine's clock is more than 5 minutes off the KDC's.
    ClockSkew,
    /// KDC_ERR_S_PRINCIPAL_UNKNOWN (7): no account holds the host's SPN.
    ServiceUnknown,
    /// KDC_ERR_C_PRINCIPAL_UNKNOWN (6): no such account.
    ClientUnknown,
    /// KDC_ERR_CLIENT_REVOKED (18): the account is disabled, locked out or expired.
    ClientRevoked,
    /// KDC_ERR_KEY_EXPIRED (23): the password has expired.
    PasswordExpired,
}

impl KdcRefusal {
    /// Recognises the refusal in sspi's error text: the RFC 4120 descriptions sspi maps
    /// each KDC error code to (sspi::utils::map_keb_error_code_to_sspi_error), constant
    /// English, never the KDC's own (localized) e-text.
    pub fn recognise(text: &str) -> Option<KdcRefusal> {
        const TEXTS: [(&str, KdcRefusal); 7] = [
            (
                "pre-authentication information was invalid",
                KdcRefusal::PreauthFailed,
            ),
            (
                "KDC has no support for encryption type",
                KdcRefusal::EtypeNotSupported,
            ),
            ("clock skew too great", KdcRefusal::ClockSkew),
            (
                "server not found in Kerberos database",
                KdcRefusal::ServiceUnknown,
            ),
            (
                "client not found in Kerberos database",
                KdcRefusal::ClientUnknown,
            ),
            (
                "clients credentials have been revoked",
                KdcRefusal::ClientRevoked,
            ),
            ("password has expired", KdcRefusal::PasswordExpired),
        ];
        TEXTS
            .iter()
            .find(|(t, _)| text.contains(t))
            .map(|(_, r)| *r)
    }

    /// Its RFC 4120 name and code.
    pub fn code(self) -> &'static str {
        match self {
            KdcRefusal::PreauthFailed => "KDC_ERR_PREAUTH_FAILED (24)",
            KdcRefusal::EtypeNotSupported => "KDC_ERR_ETYPE_NOSUPP (14)",
            KdcRefusal::ClockSkew => "KRB_AP_ERR_SKEW (37)",
            KdcRefusal::ServiceUnknown => "KDC_ERR_S_PRINCIPAL_UNKNOWN (7)",
            KdcRefusal::ClientUnknown => "KDC_ERR_C_PRINCIPAL_UNKNOWN (6)",
            KdcRefusal::ClientRevoked => "KDC_ERR_CLIENT_REVOKED (18)",
            KdcRefusal::PasswordExpired => "KDC_ERR_KEY_EXPIRED (23)",
        }
    }

    /// What to fix.
    pub fn remedy(self) -> &'static str {
        match self {
            KdcRefusal::PreauthFailed => {
                "the password of winrm.username is wrong: correct winrm.password_file (each try counts toward AD's account lockout, so mailboxd does not retry it faster than the lockout window)"
            }
            KdcRefusal::EtypeNotSupported => {
                "the KDC has no AES key for winrm.username: reset the password of winrm.username so it gets AES keys (an account whose password predates AES, or RC4-only since the RC4 hardening of 2026)"
            }
            KdcRefusal::ClockSkew => {
                "this machine's clock is more than 5 minutes off the domain controllers': synchronise it (NTP) with the domain"
            }
            KdcRefusal::ServiceUnknown => {
                "no account holds the host's SPN: register HTTP/<host fqdn> (setspn -S HTTP/iqsvc01.corp.example IQSVC01) or set winrm.spn to the one registered; connect by the host's FQDN, not an IP or alias"
            }
            KdcRefusal::ClientUnknown => {
                "the KDC does not know winrm.username: give it as user@REALM of an existing account"
            }
            KdcRefusal::ClientRevoked => {
                "winrm.username is disabled, locked out or expired in AD: enable or unlock it (and find what sent bad passwords before)"
            }
            KdcRefusal::PasswordExpired => {
                "the password of winrm.username has expired: set a new one in AD and in winrm.password_file"
            }
        }
    }
}

/// What to check after a Kerberos failure: the refusal's remedy when the KDC said which.
fn kerberos_advice(text: &str) -> String {
    match KdcRefusal::recognise(text) {
        Some(r) => format!("{}: {}", r.code(), r.remedy()),
        None => "check winrm.kdc, the account as user@REALM, its password, and that the host's SPN HTTP/<fqdn> exists with AES keys".into(),
    }
}

impl WinrmError {
    /// The KDC's refusal of the account, when this is one.
    pub fn kdc_refusal(&self) -> Option<KdcRefusal> {
        match self {
            WinrmError::Kerberos(text) => KdcRefusal::recognise(text),
            _ => None,
        }
    }

    /// The host or the KDC refused the account's credentials: every retry would send them
    /// again and count toward AD's account lockout, so nothing retries faster than its window.
    pub fn refuses_credentials(&self) -> bool {
        match self {
            WinrmError::Unauthorized | WinrmError::NtlmRefused | WinrmError::CredSsp(_) => true,
            WinrmError::Kerberos(_) => self.kdc_refusal().is_some(),
            _ => false,
        }
    }

    /// Sorts a fault into the kinds a caller acts on differently.
    pub fn from_fault(f: WsmanFault) -> WinrmError {
        match (f.code, f.subcode.as_str()) {
            (Some(CODE_ACCESS_DENIED), _) | (_, "AccessDenied") => WinrmError::AccessDenied(f),
            (Some(CODE_QUOTA_LIMIT), _) | (_, "QuotaLimit") => WinrmError::ShellQuota(f),
            (Some(CODE_INVALID_SELECTORS), _) | (_, "InvalidSelectors") => WinrmError::ShellGone(f),
            (Some(CODE_OPERATION_TIMEOUT), _) | (_, "TimedOut") => WinrmError::OperationTimeout(f),
            (Some(CODE_ENVELOPE_TOO_LARGE), _) | (_, "EncodingLimit") => {
                WinrmError::EnvelopeTooLarge(f.to_string())
            }
            // No public fault code for this refusal: its message, Windows' own (English).
            _ if f
                .to_string()
                .contains("not accept any remote shell requests") =>
            {
                WinrmError::ShellsNotAllowed(f)
            }
            _ => WinrmError::Fault(f),
        }
    }

    /// Worth retrying as it is (network, timeouts, overload, quota, a lost shell).
    pub fn is_transient(&self) -> bool {
        match self {
            WinrmError::Refused(_)
            | WinrmError::Unreachable(_)
            | WinrmError::Timeout
            | WinrmError::ShellQuota(_)
            | WinrmError::ShellGone(_)
            | WinrmError::OperationTimeout(_)
            | WinrmError::Encryption(_) => true,
            WinrmError::Http { status, .. } => *status >= 500,
            WinrmError::Config(_)
            | WinrmError::Tls(_)
            | WinrmError::Unauthorized
            | WinrmError::Kerberos(_)
            | WinrmError::CredSspNotOffered(_)
            | WinrmError::CredSsp(_)
            | WinrmError::NtlmBlocked(_)
            | WinrmError::NtlmRefused
            | WinrmError::AccessDenied(_)
            | WinrmError::EnvelopeTooLarge(_)
            | WinrmError::ShellsNotAllowed(_)
            | WinrmError::Fault(_)
            | WinrmError::Protocol(_) => false,
        }
    }

    /// The host, not this one request, is the problem: trips the circuit breaker.
    pub fn is_systemic(&self) -> bool {
        matches!(
            self,
            WinrmError::Config(_)
                | WinrmError::Refused(_)
                | WinrmError::Unreachable(_)
                | WinrmError::Tls(_)
                | WinrmError::Unauthorized
                | WinrmError::Kerberos(_)
                | WinrmError::CredSspNotOffered(_)
                | WinrmError::CredSsp(_)
                | WinrmError::NtlmBlocked(_)
                | WinrmError::NtlmRefused
                | WinrmError::AccessDenied(_)
                | WinrmError::ShellsNotAllowed(_)
        )
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            WinrmError::Config(_) => "config",
            WinrmError::Refused(_) => "refused",
            WinrmError::Unreachable(_) => "unreachable",
            WinrmError::Tls(_) => "tls",
            WinrmError::Timeout => "timeout",
            WinrmError::Unauthorized => "unauthorized",
            WinrmError::AccessDenied(_) => "access_denied",
            WinrmError::ShellQuota(_) => "shell_quota",
            WinrmError::ShellGone(_) => "shell_gone",
            WinrmError::EnvelopeTooLarge(_) => "envelope_too_large",
            WinrmError::OperationTimeout(_) => "operation_timeout",
            WinrmError::Encryption(_) => "encryption",
            WinrmError::Kerberos(_) => "kerberos",
            WinrmError::CredSspNotOffered(_) => "credssp_not_offered",
            WinrmError::CredSsp(_) => "credssp",
            WinrmError::NtlmBlocked(_) => "ntlm_blocked",
            WinrmError::NtlmRefused => "ntlm_refused",
            WinrmError::Http { .. } => "http",
            WinrmError::ShellsNotAllowed(_) => "shells_not_allowed",
            WinrmError::Fault(_) => "fault",
            WinrmError::Protocol(_) => "protocol",
        }
    }
}
