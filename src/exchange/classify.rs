//! What an Exchange failure means for a job: the error of a whole batch, and the class
//! (transient, permanent, systemic) of an account's error, decided on exception type names
//! because Exchange's message texts are localized.

use crate::store::ErrorClass;
use winrm::WinrmError;

/// A failure of the whole batch, before any account could be judged.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("WinRM: {0}")]
    Winrm(#[from] WinrmError),
    #[error("could not open the Exchange session: {message}")]
    Session { class: ErrorClass, message: String },
    /// Exchange refused a session under its throttling policy (PowerShellMaxConcurrency or
    /// the runspace budget): the host is fine, mailboxd is too busy. Retried, not a reason
    /// to open the circuit; lower worker.concurrency across replicas if it persists.
    #[error(
        "Exchange throttled the session (lower worker.concurrency if this persists): {message}"
    )]
    Throttled {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
    #[error("the PowerShell script stopped (exit code {exit_code}): {message}")]
    Script { exit_code: i64, message: String },
    #[error(
        "the batch did not finish within {0:?} (worker.batch_timeout); the Windows host may be hung — its jobs are retried"
    )]
    Hung(std::time::Duration),
}

impl ExchangeError {
    pub fn class(&self) -> ErrorClass {
        match self {
            // What only an administrator can mend: credentials, rights, certificates, settings.
            ExchangeError::Winrm(
                WinrmError::Unauthorized
                | WinrmError::Config(_)
                | WinrmError::AccessDenied(_)
                | WinrmError::Tls(_)
                | WinrmError::EnvelopeTooLarge(_),
            ) => ErrorClass::Systemic,
            ExchangeError::Winrm(_) => ErrorClass::Transient,
            ExchangeError::Session { class, .. } => *class,
            ExchangeError::Throttled { .. } => ErrorClass::Transient,
            ExchangeError::Script { .. } => ErrorClass::Systemic,
            ExchangeError::Hung(_) => ErrorClass::Transient,
        }
    }
}

/// Whether a session refusal is Exchange's throttling (notes/exchange.md §5), and how long
/// it asks to wait. Both refusals arrive as a generic PSRemotingTransportException, so the
/// text is all there is to go on; `Some(None)`: throttled, no wait given.
pub fn throttling(message: &str) -> Option<Option<std::time::Duration>> {
    let throttled = message.contains("exceeded the maximum number of connections")
        || message.contains("exceeded your budget");
    if !throttled {
        return None;
    }
    let wait = message
        .split("wait for ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    Some(wait)
}

/// Maps an Exchange/PowerShell exception type to what mailboxd does about it
/// (notes/exchange.md §2). Classify on the type name, never on localized text.
pub fn classify(reason: Option<&str>, message: &str) -> ErrorClass {
    match reason.unwrap_or("") {
        "ProxyAddressExistsException"
        | "RecipientTaskException"
        | "ManagementObjectAmbiguousException"
        | "ErrorCannotFindTargetDeliveryDomainException"
        | "ParameterBindingException"
        | "ParameterBindingValidationException"
        | "ArgumentException"
        | "DataValidationException" => ErrorClass::Permanent,
        "CommandNotFoundException" | "UnauthorizedAccessException" | "PSSecurityException" => {
            ErrorClass::Systemic
        }
        "ManagementObjectNotFoundException" => ErrorClass::Transient,
        _ if message.contains("Access is denied") => ErrorClass::Systemic,
        _ => ErrorClass::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_throttling_refusals_are_recognised_with_their_wait() {
        let cap = "[FailureCategory=AuthZ-AuthorizationException] Fail to create a runspace because you have exceeded the maximum number of connections allowed : 18";
        assert_eq!(throttling(cap), Some(None));
        let budget = "Fail to create runspace because you have exceeded your budget to create runspace. Please wait for 42 seconds.";
        assert_eq!(
            throttling(budget),
            Some(Some(std::time::Duration::from_secs(42)))
        );
        assert_eq!(
            throttling("The WinRM client cannot process the request."),
            None
        );
    }

    #[test]
    fn classification_follows_the_exception_type() {
        assert_eq!(
            classify(Some("ProxyAddressExistsException"), ""),
            ErrorClass::Permanent
        );
        assert_eq!(
            classify(Some("ManagementObjectNotFoundException"), ""),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(Some("CommandNotFoundException"), ""),
            ErrorClass::Systemic
        );
        assert_eq!(classify(None, "Access is denied"), ErrorClass::Systemic);
        assert_eq!(
            classify(Some("PSRemotingTransportException"), "exceeded"),
            ErrorClass::Transient
        );
    }
}
