//! Runs a batch of accounts through one PowerShell process on the Windows host and
//! turns its output into one outcome per account.

pub mod warm;

use std::collections::HashMap;

use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config;
use crate::store::ErrorClass;
pub use ps_templates::{
    AccountData, BatchData, CredentialData, Payload, ResultLine, SessionData, Template,
};
use winrm::{ShellOptions, WinrmClient, WinrmError};

/// Transcript kept per attempt at most (the store keeps an excerpt, not a log).
const TRANSCRIPT_CAP: usize = 8 * 1024;

/// What happened to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountOutcome {
    /// Exchange did it, or it was already true: the status says which
    /// (`enabled`, `already`, `unhidden`, `hidden`, `not_remote`).
    Done {
        status: String,
    },
    Failed {
        class: ErrorClass,
        message: String,
    },
}

#[derive(Debug)]
pub struct BatchResult {
    pub outcomes: HashMap<Uuid, AccountOutcome>,
    pub transcript: String,
}

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

/// The Exchange side as the worker sees it.
#[derive(Clone)]
pub struct Exchange {
    winrm: WinrmClient,
    session: SessionData,
    endpoint: String,
    secrets: Vec<String>,
    /// Warm sessions (`exchange.warm_sessions` > 0): batches go to long-lived processes.
    warm: Option<std::sync::Arc<warm::WarmPool>>,
}

impl Exchange {
    pub fn new(winrm: WinrmClient, cfg: &config::Exchange, endpoint: String) -> Exchange {
        let credential = match (&cfg.username, &cfg.password) {
            (Some(username), Some(password)) => Some(CredentialData {
                username: username.clone(),
                password: password.expose_secret().to_owned(),
            }),
            _ => None,
        };
        let secrets = credential
            .iter()
            .map(|c| c.password.clone())
            .filter(|p| !p.is_empty())
            .collect();
        let warm = (cfg.warm_sessions > 0).then(|| {
            std::sync::Arc::new(warm::WarmPool::new(
                winrm.clone(),
                cfg.warm_sessions,
                cfg.warm_max_requests,
            ))
        });
        Exchange {
            warm,
            winrm,
            session: SessionData {
                mode: cfg.mode,
                connection_uris: cfg.connection_uris.clone(),
                view_entire_forest: cfg.view_entire_forest,
                warm: cfg.warm_sessions > 0,
                credential,
            },
            endpoint,
            secrets,
        }
    }

    /// Also writes `[REDACTED]` for these values (the other secrets the daemon holds: the
    /// WinRM, LDAP and SMTP passwords, the admin token) wherever Exchange's output is kept:
    /// an error text that echoes one must not carry it into the database, the API or an email.
    pub fn redacting(mut self, secrets: impl IntoIterator<Item = String>) -> Exchange {
        self.secrets
            .extend(secrets.into_iter().filter(|s| !s.is_empty()));
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets.dedup();
        self
    }

    /// Ends the warm processes (shutdown); nothing without warm sessions.
    pub async fn close(&self) {
        if let Some(pool) = &self.warm {
            pool.close().await;
        }
    }

    /// The WinRM host, for the attempt record.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Runs `template` for `accounts` in one PowerShell process.
    pub async fn run_batch(
        &self,
        template: Template,
        accounts: Vec<AccountData>,
    ) -> Result<BatchResult, ExchangeError> {
        let ids: Vec<Uuid> = accounts.iter().map(|a| a.job_id).collect();
        let payload = Payload::new(
            template,
            BatchData {
                session: self.session.clone(),
                accounts,
            },
        );
        let output = match &self.warm {
            Some(pool) => pool.run(&payload).await?,
            None => {
                let stdin = payload.to_bytes();
                let args = ps_templates::command_arguments();
                let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let shell = self.winrm.open_shell(&ShellOptions::default()).await?;
                let run = shell
                    .run(ps_templates::POWERSHELL, &arg_refs, Some(&stdin))
                    .await;
                // Always give the shell back: leaked shells count against the host's quota.
                if let Err(e) = shell.close().await {
                    tracing::warn!(error = %e, "could not delete the WinRM shell; it expires on the host's idle timeout");
                }
                run?
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = winrm::clixml::readable(&output.stderr);
        let parsed = ps_templates::parse_stdout(&stdout);
        let transcript = self.redact(&excerpt(&parsed.other, &parsed.malformed, &stderr));

        if let Some(session_error) = parsed
            .results
            .iter()
            .find(|r| r.scope.as_deref() == Some("session"))
        {
            let message = self.redact(session_error.message.as_deref().unwrap_or("unknown error"));
            let class = match classify(session_error.reason.as_deref(), &message) {
                ErrorClass::Permanent => ErrorClass::Systemic,
                other => other,
            };
            if let Some(retry_after) = throttling(&message) {
                return Err(ExchangeError::Throttled {
                    message,
                    retry_after,
                });
            }
            return Err(ExchangeError::Session { class, message });
        }
        if let Some(fatal) = parsed.fatal {
            return Err(ExchangeError::Script {
                exit_code: output.exit_code,
                message: self.redact(&fatal),
            });
        }

        let mut outcomes = HashMap::new();
        for r in &parsed.results {
            let Some(id) = r.job_id.as_deref().and_then(|s| Uuid::parse_str(s).ok()) else {
                continue;
            };
            if !ids.contains(&id) {
                continue;
            }
            let outcome = if r.status == "error" {
                let message = self.redact(r.message.as_deref().unwrap_or("no message"));
                let class = classify(r.reason.as_deref(), &message);
                let message = match &r.reason {
                    Some(reason) if !reason.is_empty() => format!("{reason}: {message}"),
                    _ => message,
                };
                AccountOutcome::Failed { class, message }
            } else {
                AccountOutcome::Done {
                    status: r.status.clone(),
                }
            };
            outcomes.insert(id, outcome);
        }
        for id in ids {
            outcomes.entry(id).or_insert_with(|| AccountOutcome::Failed {
                class: ErrorClass::Transient,
                message: format!(
                    "the script returned no result for this account (exit code {}); see the transcript",
                    output.exit_code
                ),
            });
        }
        Ok(BatchResult {
            outcomes,
            transcript,
        })
    }

    fn redact(&self, text: &str) -> String {
        let mut t = text.to_owned();
        for s in &self.secrets {
            t = t.replace(s.as_str(), "[REDACTED]");
        }
        t
    }
}

fn excerpt(other: &[String], malformed: &[String], stderr: &str) -> String {
    let mut t = String::new();
    for line in other.iter().chain(malformed) {
        t.push_str(line);
        t.push('\n');
    }
    if !stderr.is_empty() {
        t.push_str("[stderr]\n");
        t.push_str(stderr);
    }
    if t.len() > TRANSCRIPT_CAP {
        let mut cut = TRANSCRIPT_CAP;
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        t.truncate(cut);
        t.push_str("\n[…cut]");
    }
    t
}

#[cfg(test)]
mod tests {
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

    use super::*;

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
