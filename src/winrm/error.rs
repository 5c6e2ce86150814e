//! WinRM errors, typed so the worker can tell "try again" from "fix the configuration".

/// A WS-Management fault as the server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsmanFault {
    /// The WSManFault `Code` (e.g. 2150858793 = operation timeout), when present.
    pub code: Option<u32>,
    /// The SOAP subcode's local name, e.g. `TimedOut`, `QuotaLimit`, `InvalidSelectors`.
    pub subcode: String,
    pub reason: String,
    pub message: Option<String>,
    pub machine: Option<String>,
}

impl std::fmt::Display for WsmanFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.subcode)?;
        if let Some(c) = self.code {
            write!(f, " (code {c})")?;
        }
        let text = self.message.as_deref().unwrap_or(&self.reason);
        write!(f, ": {}", text.trim())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WinrmError {
    #[error("WinRM configuration: {0}")]
    Config(String),
    #[error(
        "cannot reach the WinRM host: {0} (check winrm.endpoint, the network path and the host's firewall; TLS problems show here too)"
    )]
    Connect(String),
    #[error("the WinRM host did not answer in time; it may be overloaded — the job is retried")]
    Timeout,
    #[error(
        "the WinRM host refused the credentials (HTTP 401): check winrm.username, the password and winrm.auth"
    )]
    Unauthorized,
    #[error("the WinRM host answered HTTP {status}: {body_excerpt}")]
    Http { status: u16, body_excerpt: String },
    #[error("WS-Management fault: {0}")]
    Fault(WsmanFault),
    #[error("unexpected WinRM reply: {0}")]
    Protocol(String),
}

impl WinrmError {
    /// Worth retrying as it is (network, timeouts, overload, quota).
    pub fn is_transient(&self) -> bool {
        match self {
            WinrmError::Connect(_) | WinrmError::Timeout => true,
            WinrmError::Http { status, .. } => *status >= 500,
            WinrmError::Fault(f) => {
                matches!(
                    f.code,
                    Some(super::soap::CODE_OPERATION_TIMEOUT | super::soap::CODE_QUOTA_LIMIT)
                ) || f.subcode == "TimedOut"
                    || f.subcode == "QuotaLimit"
            }
            WinrmError::Config(_) | WinrmError::Unauthorized | WinrmError::Protocol(_) => false,
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            WinrmError::Config(_) => "config",
            WinrmError::Connect(_) => "connect",
            WinrmError::Timeout => "timeout",
            WinrmError::Unauthorized => "unauthorized",
            WinrmError::Http { .. } => "http",
            WinrmError::Fault(_) => "fault",
            WinrmError::Protocol(_) => "protocol",
        }
    }
}
