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
    #[error(
        "Kerberos logon failed: {0} (check winrm.kdc, the account as user@REALM, its password, and that the host's SPN HTTP/<fqdn> exists with AES keys)"
    )]
    Kerberos(String),
    #[error(
        "the WinRM host does not offer CredSSP (it offers {0}): on the host run `Enable-WSManCredSSP -Role Server` (winrm/config/service/auth CredSSP=true), or choose another winrm.auth"
    )]
    CredSspNotOffered(String),
    #[error("CredSSP with the WinRM host failed: {0}")]
    CredSsp(String),
    #[error("the WinRM host answered HTTP {status}: {body_excerpt}")]
    Http { status: u16, body_excerpt: String },
    #[error("WS-Management fault: {0}")]
    Fault(WsmanFault),
    #[error("unexpected WinRM reply: {0}")]
    Protocol(String),
}

impl WinrmError {
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
            | WinrmError::AccessDenied(_)
            | WinrmError::EnvelopeTooLarge(_)
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
                | WinrmError::AccessDenied(_)
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
            WinrmError::Http { .. } => "http",
            WinrmError::Fault(_) => "fault",
            WinrmError::Protocol(_) => "protocol",
        }
    }
}
