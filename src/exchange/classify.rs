//! What an Exchange failure means for a job: the error of a whole batch, and the class
//! (transient, permanent, systemic) of an account's error, decided on exception type names
//! because Exchange's message texts are localized.

use crate::job::ErrorClass;
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
    /// Exchange ended the PowerShell session mid-batch (its idle timeout, an IIS app pool
    /// recycle): the host is fine, the batch is retried in a new session.
    #[error(
        "Exchange dropped the PowerShell session during the batch (WSMan-InvalidShellID); the batch is retried in a new session: {message}"
    )]
    SessionDropped { message: String },
    /// The recipient cmdlets are not in the host's PowerShell: the session mode is wrong
    /// for this host. Every account would fail the same way.
    #[error(
        "the Exchange cmdlets are not available in the host's PowerShell: set exchange.mode to \"remote\" (New-PSSession to an Exchange server) or \"snapin\" (the Exchange Management Tools on this host); \"none\" works only where a profile loads them: {message}"
    )]
    CmdletsMissing { message: String },
}

impl ExchangeError {
    pub fn class(&self) -> ErrorClass {
        match self {
            // What only an administrator can mend: credentials, rights, certificates, settings.
            // Kerberos and CredSSP too: a KDC refusal (wrong password, no AES key, clock skew,
            // unknown SPN, revoked account) or a refused CredSSP logon is not mended by a
            // retry, and each retry counts toward AD's account lockout.
            ExchangeError::Winrm(
                WinrmError::Unauthorized
                | WinrmError::Config(_)
                | WinrmError::AccessDenied(_)
                | WinrmError::Tls(_)
                | WinrmError::EnvelopeTooLarge(_)
                | WinrmError::Kerberos(_)
                | WinrmError::CredSsp(_)
                | WinrmError::CredSspNotOffered(_)
                | WinrmError::NtlmBlocked(_)
                | WinrmError::NtlmRefused
                | WinrmError::ShellsNotAllowed(_),
            ) => ErrorClass::Systemic,
            ExchangeError::Winrm(_) => ErrorClass::Transient,
            ExchangeError::Session { class, .. } => *class,
            ExchangeError::Throttled { .. } => ErrorClass::Transient,
            ExchangeError::Script { .. } => ErrorClass::Systemic,
            ExchangeError::Hung(_) => ErrorClass::Transient,
            ExchangeError::SessionDropped { .. } => ErrorClass::Transient,
            ExchangeError::CmdletsMissing { .. } => ErrorClass::Systemic,
        }
    }

    /// Credentials were refused (WinRM's, the KDC's, CredSSP's, or Exchange's for the
    /// explicit credential): probing again sends them again, which counts toward AD's
    /// lockout, so the circuit waits at least `worker.credential_probe_interval`.
    pub fn refuses_credentials(&self) -> bool {
        match self {
            ExchangeError::Winrm(e) => e.refuses_credentials(),
            ExchangeError::Session { message, .. } => {
                crate::windows_host::HostProblem::recognise(message)
                    == Some(crate::windows_host::HostProblem::ExchangeCredentialRefused)
            }
            _ => false,
        }
    }
}

/// Whether an error is Exchange's throttling (docs/decisions.md, "Exchange's throttling"),
/// and how long it asks to wait. The refusals arrive as a generic
/// PSRemotingTransportException, so the text is all there is to go on; `Some(None)`:
/// throttled, no wait given. Three wordings: the
/// MaxConcurrency and runspace-budget refusals, and the WS-Management user load quota
/// ("…will not be approved for at least Z milliseconds", from an Exchange 2010 transcript).
pub fn throttling(message: &str) -> Option<Option<std::time::Duration>> {
    if message.contains("user load quota") {
        let wait = message
            .split("at least ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(std::time::Duration::from_millis);
        return Some(wait);
    }
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

/// Whether a result says Exchange dropped the session (KB 3090768): the routing prefix's
/// `FailureCategory=WSMan-InvalidShellID`, or PowerShell's InvalidSessionState for a session
/// found Broken. Ids, not localized text.
pub fn session_dropped(error_id: Option<&str>, message: &str) -> bool {
    message.contains("FailureCategory=WSMan-InvalidShellID")
        || error_id.is_some_and(|id| {
            id.contains("WSMan-InvalidShellID") || id.starts_with("InvalidSessionState")
        })
}

/// Whether a protected account's ACL refused Exchange's write: the DC's diagnostic
/// (`problem 4003 (INSUFF_ACCESS_RIGHTS)`; KB 3096158 spells it `INSUF_`) is not localized.
fn insufficient_rights(message: &str) -> bool {
    message.contains("problem 4003")
        || message.contains("INSUFF_ACCESS_RIGHTS")
        || message.contains("INSUF_ACCESS_RIGHTS")
}

/// What the same rights error on every account of a snap-in batch means: the Management
/// Tools without a server have no RBAC, so their writes run with the WinRM account's own AD
/// rights, which only "Recipient Management EMT" (or Domain Admins) grants.
pub(crate) const EMT_RIGHTS_MISSING: &str = "every account of the batch was refused with insufficient access rights: in exchange.mode = \"snapin\" the Exchange Management Tools have no RBAC (learn.microsoft.com, manage-hybrid-exchange-recipients-with-management-tools), so the WinRM account (winrm.username) writes with its own AD rights. Add it to the group \"Recipient Management EMT\" (created once by a Domain Admin running Add-PermissionForEMT.ps1 from $env:ExchangeInstallPath\\Scripts, the snap-in loaded) and let it log on anew; `mailboxd check` says whether it is a member";

/// Whether an account's error is the DC refusing a write for lack of rights.
pub(crate) fn refused_for_rights(reason: Option<&str>, message: &str) -> bool {
    reason == Some("ADOperationException") && insufficient_rights(message)
}

/// What an operator does about an account's error, where mailboxd knows; appended to the
/// job's error and so to its alert.
pub fn advice(reason: Option<&str>, message: &str) -> Option<&'static str> {
    match reason.unwrap_or("") {
        "ADOperationException" if insufficient_rights(message) => Some(
            "the account is most likely protected (adminCount=1: a member, now or once, of a protected group such as Domain Admins, whose ACL AdminSDHolder resets every hour with inheritance off); enable inheritance on that account (and clear adminCount if it is no longer protected) or grant the Exchange servers the rights on that account, then retry the job",
        ),
        "ResourceMailbox" => Some(
            "the account's remote mailbox is a room or equipment mailbox, not the type the joiner asks for (mailbox.type; a person's when absent); mailboxd does not convert a resource. Fix it by hand: if the account really should be that type, run Set-RemoteMailbox <account> -Type <Regular|Shared|Room|Equipment> on premises (and Set-Mailbox -Type in Exchange Online if the mailbox was migrated), then retry the job; otherwise correct the account or the mailbox.type the IAM system sends",
        ),
        "ParameterBindingArgumentTransformationException" => Some(
            "Exchange cannot convert a value of the event to the parameter's type (named above); correct the value in the IAM system and send the event again",
        ),
        _ => None,
    }
}

/// Maps an Exchange/PowerShell exception type to what mailboxd does about it
/// (docs/decisions.md, "What an attempt's error leads to"). Classify on the type name, never
/// on localized text.
pub fn classify(reason: Option<&str>, message: &str) -> ErrorClass {
    match reason.unwrap_or("") {
        "ProxyAddressExistsException"
        | "RecipientTaskException"
        | "ManagementObjectAmbiguousException"
        | "ErrorCannotFindTargetDeliveryDomainException"
        | "ParameterBindingException"
        | "ParameterBindingValidationException"
        | "ArgumentException"
        | "DataValidationException"
        | "ParameterBindingArgumentTransformationException"
        | "ResourceMailbox" => ErrorClass::Permanent,
        "ADOperationException" if insufficient_rights(message) => ErrorClass::Permanent,
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

    #[test]
    fn the_user_load_quota_is_throttling_and_its_wait_is_the_retry_time() {
        // c7solutions / an EMC 2010 transcript, verbatim.
        let quota = "The WS-Management service cannot process the request. The user load quota of 1000 requests per 2 seconds has been exceeded. Send future requests at a slower rate or raise the quota for this user. The next request from this user will not be approved for at least 2 milliseconds.";
        assert_eq!(
            throttling(quota),
            Some(Some(std::time::Duration::from_millis(2)))
        );
        assert_eq!(
            classify(Some("PSRemotingTransportException"), quota),
            ErrorClass::Transient
        );
    }

    #[test]
    fn insufficient_access_rights_is_permanent_for_the_account_with_what_to_do() {
        // Zachary Loeber's New-MoveRequest transcript, whitespace normalised.
        let text = "Active Directory operation failed on yourdc.corp.contoso.local. This error is not retriable. Additional information: Insufficient access rights to perform the operation.\nActive directory response: 00002098: SecErr: DSID-03150BB9, problem 4003 (INSUFF_ACCESS_RIGHTS), data 0";
        assert_eq!(
            classify(Some("ADOperationException"), text),
            ErrorClass::Permanent
        );
        let what = advice(Some("ADOperationException"), text).unwrap();
        assert!(what.contains("adminCount=1") && what.contains("AdminSDHolder"));
        assert!(what.contains("enable inheritance"));
        // Another directory failure of Exchange's stays transient.
        let busy = "Active Directory operation failed on dc1. The server is busy.";
        assert_eq!(
            classify(Some("ADOperationException"), busy),
            ErrorClass::Transient
        );
        assert_eq!(advice(Some("ADOperationException"), busy), None);
    }

    #[test]
    fn an_argument_transformation_error_is_permanent() {
        // MicrosoftDocs/office-docs-powershell#1763, through implicit remoting.
        let text = "Cannot process argument transformation on parameter 'Mailbox'. Cannot convert the \"3be24c07-6f3d-4f90-b506-c69508776ade\" value of type \"System.Guid\" to type \"Microsoft.Exchange.Configuration.Tasks.MailboxLocationIdParameter\".";
        let reason = Some("ParameterBindingArgumentTransformationException");
        assert_eq!(classify(reason, text), ErrorClass::Permanent);
        assert!(advice(reason, text).unwrap().contains("correct the value"));
    }

    #[test]
    fn a_dropped_session_is_recognised_by_its_failure_category() {
        // KB 3090768 "InvalidShellID error in RPS".
        let text = "Processing data for a remote command failed with the following error message: [ClientAccessServer=Server1,BackEndServer=Server2,RequestId=<>,TimeStamp=DateTime] [FailureCategory=WSMan-InvalidShellID] The request for the Windows Remote Shell with ShellId <> failed because the shell was not found on the server.";
        assert!(session_dropped(Some("JobFailure"), text));
        assert!(session_dropped(
            Some("InvalidSessionState"),
            "the runspace is Broken"
        ));
        assert!(!session_dropped(
            Some("JobFailure"),
            "The I/O operation has been aborted"
        ));
    }

    #[test]
    fn missing_exchange_cmdlets_are_systemic() {
        // learn.microsoft.com Q&A 1363212, verbatim.
        let text = "The term 'Enable-RemoteMailbox' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again.";
        assert_eq!(
            classify(Some("CommandNotFoundException"), text),
            ErrorClass::Systemic
        );
        let e = ExchangeError::CmdletsMissing {
            message: text.into(),
        };
        assert_eq!(e.class(), ErrorClass::Systemic);
        assert!(e.to_string().contains("set exchange.mode"));
    }
}
