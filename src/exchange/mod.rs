//! Runs a batch of accounts through one PowerShell process on the Windows host and
//! turns its output into one outcome per account. The process is new for each batch, or a
//! long-lived one from the warm pool (`warm`); what an Exchange error means for the job is
//! decided apart from running it (`classify`).

mod classify;
pub mod warm;

use std::collections::HashMap;

use secrecy::ExposeSecret;
use uuid::Uuid;

pub use classify::{ExchangeError, advice, classify, session_dropped, throttling};

use crate::config;
use crate::job::{ErrorClass, JobEffect};
use crate::windows_host::HostProblem;
pub use ps_templates::{
    AccountData, BatchData, CredentialData, Payload, RemoteMailboxType, ResultLine, Seen,
    SessionData, Template,
};
use ps_templates::{ParsedOutput, ResultScope, ResultStatus};
use winrm::{CommandOutput, ShellOptions, WinrmClient, WinrmError};

/// Transcript kept per attempt at most (the store keeps an excerpt, not a log).
const TRANSCRIPT_CAP: usize = 8 * 1024;

/// What Exchange said for one account: it did it (or it was so already), or it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountReply {
    /// Exchange did it, or it was already true: `enabled`, `already`, `unhidden`,
    /// `hidden` or `not_remote`.
    Done { outcome: JobEffect },
    Failed {
        class: ErrorClass,
        message: String,
        /// Exchange's throttling said how long to wait: no retry sooner.
        retry_after: Option<std::time::Duration>,
    },
}

#[derive(Debug)]
pub struct BatchResult {
    pub outcomes: HashMap<Uuid, AccountReply>,
    pub transcript: String,
    /// The Exchange cmdlets the accounts ran (the session's own not counted): what each
    /// one's status says, the most it may have run where the status does not say.
    pub cmdlets_ran: u32,
}

/// One PowerShell run's output, its stdout parsed once, where it arrives.
#[derive(Debug)]
pub(crate) struct HostOutput {
    pub parsed: ParsedOutput,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
}

impl HostOutput {
    pub(crate) fn read(output: &CommandOutput) -> HostOutput {
        HostOutput {
            parsed: ps_templates::parse_stdout(&String::from_utf8_lossy(&output.stdout)),
            stderr: output.stderr.clone(),
            exit_code: output.exit_code,
        }
    }

    /// Appends a later run's output, as if it had followed on the same process.
    fn extend(&mut self, later: HostOutput) {
        self.parsed.extend(later.parsed);
        self.stderr.extend(later.stderr);
        self.exit_code = later.exit_code;
    }

    /// Whether Exchange dropped the session during this run (an account's cmdlet failed
    /// with it): a warm process is then not kept.
    pub(crate) fn session_lost(&self) -> bool {
        self.parsed.results.iter().any(dropped)
    }
}

/// The Exchange side as the worker sees it.
#[derive(Clone)]
pub struct Exchange {
    winrm: WinrmClient,
    session: SessionData,
    endpoint: String,
    secrets: Vec<String>,
    /// Stdin's first line: the Exchange password (or an empty line), read by the bootstrap
    /// apart from the JSON (ps_templates::secret_line).
    secret_line: std::sync::Arc<secrecy::SecretSlice<u8>>,
    /// Warm sessions (`exchange.warm_sessions` > 0): batches go to long-lived processes.
    warm: Option<std::sync::Arc<warm::WarmPool>>,
}

impl Exchange {
    pub fn new(winrm: WinrmClient, cfg: &config::Exchange, endpoint: String) -> Exchange {
        let (credential, password) = match (&cfg.username, &cfg.password) {
            (Some(username), Some(password)) => (
                Some(CredentialData {
                    username: username.clone(),
                }),
                Some(password.expose_secret()),
            ),
            _ => (None, None),
        };
        let secrets = password
            .iter()
            .map(|p| (*p).to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        // Config validation refuses a password with a line break; an empty line otherwise.
        let line = ps_templates::secret_line(password).unwrap_or_else(|_| b"\r\n".to_vec());
        let secret_line = std::sync::Arc::new(secrecy::SecretSlice::from(line));
        let warm = (cfg.warm_sessions > 0).then(|| {
            std::sync::Arc::new(warm::WarmPool::new(
                winrm.clone(),
                cfg.warm_sessions,
                cfg.warm_max_requests,
                secret_line.clone(),
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
                signing_certificate: cfg.signing_certificate_thumbprint.clone(),
            },
            endpoint,
            secrets,
            secret_line,
        }
    }

    /// Also writes `[REDACTED]` for these values (the other secrets the daemon holds: the
    /// WinRM, LDAP and SMTP passwords, the admin token) wherever Exchange's output is kept:
    /// an error text that echoes one must not carry it into the database, the API or an email.
    pub(crate) fn redacting(mut self, secrets: impl IntoIterator<Item = String>) -> Exchange {
        self.secrets
            .extend(secrets.into_iter().filter(|s| !s.is_empty()));
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        self.secrets.dedup();
        self
    }

    /// Warm processes hold slots of the cluster's session budget for as long as they live.
    pub(crate) fn with_budget(
        mut self,
        budget: std::sync::Arc<crate::budget::SessionBudget>,
    ) -> Exchange {
        if let Some(pool) = &self.warm {
            let pool = std::sync::Arc::new(pool.with_budget(budget));
            warm::WarmPool::reap_idle(&pool);
            self.warm = Some(pool);
        }
        self
    }

    /// Whether batches run in warm processes (which hold their own session slots).
    pub(crate) fn is_warm(&self) -> bool {
        self.warm.is_some()
    }

    /// Cmdlets opening this Exchange session costs in Exchange's cmdlet budget.
    pub(crate) fn session_cmdlets(&self) -> u32 {
        ps_templates::session_cmdlets(&self.session)
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
        let payload = Payload::new(
            template,
            BatchData {
                session: self.session.clone(),
                accounts,
            },
        );
        let output = match &self.warm {
            Some(pool) => run_warm(pool, &payload).await?,
            None => HostOutput::read(&self.run_in_new_process(&payload).await?),
        };
        self.judge_output(template, &payload.data.accounts, &output)
    }

    /// What the PowerShell process's output says about the batch of `accounts`: the
    /// `MAILBOXD-RESULT` lines, a fatal line, the exit code and stderr, each redacted. The
    /// host's output is untrusted bytes: the fuzz target `ps_result` runs exactly this.
    pub(crate) fn read_output(
        &self,
        template: Template,
        accounts: &[AccountData],
        output: &CommandOutput,
    ) -> Result<BatchResult, ExchangeError> {
        self.judge_output(template, accounts, &HostOutput::read(output))
    }

    fn judge_output(
        &self,
        template: Template,
        accounts: &[AccountData],
        output: &HostOutput,
    ) -> Result<BatchResult, ExchangeError> {
        let parsed = &output.parsed;
        let stderr = winrm::clixml::readable(&output.stderr);
        let transcript = self.redact(&excerpt(&parsed.other, &parsed.malformed, &stderr));
        self.batch_failure(parsed, output.exit_code)?;
        let ids = accounts.iter().map(|a| a.job_id).collect();
        Ok(BatchResult {
            outcomes: self.outcomes(&parsed.results, ids, output.exit_code),
            transcript,
            cmdlets_ran: template.batch_cmdlets_ran(accounts, parsed),
        })
    }

    /// One PowerShell process in a shell of its own, the shell deleted afterwards.
    async fn run_in_new_process(&self, payload: &Payload) -> Result<CommandOutput, WinrmError> {
        let mut stdin = self.secret_line.expose_secret().to_vec();
        stdin.extend(payload.to_bytes());
        let stdin = secrecy::SecretSlice::from(stdin);
        let stdin = stdin.expose_secret();
        let args = ps_templates::command_arguments();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let shell = self.winrm.open_shell(&ShellOptions::default()).await?;
        let run = shell
            .run(ps_templates::POWERSHELL, &arg_refs, Some(stdin))
            .await;
        // Always give the shell back: leaked shells count against the host's quota.
        if let Err(e) = shell.close().await {
            tracing::warn!(error = %e, "could not delete the WinRM shell; it expires on the host's idle timeout");
        }
        run
    }

    /// The failure of the whole batch, if there was one: the Exchange session did not open
    /// (throttled, or refused), or the script stopped.
    fn batch_failure(&self, parsed: &ParsedOutput, exit_code: i64) -> Result<(), ExchangeError> {
        if let Some(session_error) = parsed
            .results
            .iter()
            .find(|r| r.scope == Some(ResultScope::Session))
        {
            let message = self.redact(session_error.message.as_deref().unwrap_or("unknown error"));
            // The host's set-up (the second hop, its execution policy): no retry mends it,
            // and the job, the alert and the circuit say what does.
            if let Some(message) = HostProblem::explained(&message) {
                return Err(ExchangeError::Session {
                    class: ErrorClass::Systemic,
                    message,
                });
            }
            // A session that cannot open is the configuration's fault, never one account's.
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
        let last = parsed.last_results();
        if let Some(r) = last
            .values()
            .find(|r| r.reason.as_deref() == Some("CommandNotFoundException"))
        {
            // Not one account's problem: the session mode does not fit this host.
            let message = self.redact(r.message.as_deref().unwrap_or("CommandNotFoundException"));
            return Err(ExchangeError::CmdletsMissing { message });
        }
        if self.session.mode == ps_templates::ExchangeMode::Snapin && emt_missing(&last) {
            // Not N protected accounts: the snap-in's account lacks the rights for them all.
            let first = last.values().find_map(|r| r.message.as_deref());
            let message = self.redact(first.unwrap_or("INSUFF_ACCESS_RIGHTS"));
            return Err(ExchangeError::Session {
                class: ErrorClass::Systemic,
                message: format!("{} — {message}", classify::EMT_RIGHTS_MISSING),
            });
        }
        if let Some(r) = last.values().find(|r| second_hop_directory(r)) {
            // The snap-in reached the DC anonymously: every account fails the same way until
            // the host's logon can authenticate onwards.
            let message = self.redact(r.message.as_deref().unwrap_or("000004DC"));
            return Err(ExchangeError::Session {
                class: ErrorClass::Systemic,
                message: HostProblem::explained(&message).unwrap_or(message),
            });
        }
        // Exchange's own words for the drop first; the template's lines for the accounts it
        // then did not run (InvalidSessionState) only say that it stopped.
        let cause = last
            .values()
            .filter(|r| dropped(r))
            .min_by_key(|r| r.error_id.as_deref() == Some("InvalidSessionState"));
        if let Some(r) = cause {
            let message = self.redact(r.message.as_deref().unwrap_or("the session was dropped"));
            return Err(ExchangeError::SessionDropped { message });
        }
        match &parsed.fatal {
            Some(fatal) => {
                // Constrained Language Mode stops the bootstrap itself: say what it means.
                let message = self.redact(fatal);
                Err(ExchangeError::Script {
                    exit_code,
                    message: HostProblem::explained(&message).unwrap_or(message),
                })
            }
            None => Ok(()),
        }
    }

    /// One outcome per job of the batch: its result line, or a transient failure when the
    /// script returned none for it. Lines for jobs not in the batch are ignored.
    fn outcomes(
        &self,
        results: &[ResultLine],
        ids: Vec<Uuid>,
        exit_code: i64,
    ) -> HashMap<Uuid, AccountReply> {
        let mut outcomes = HashMap::new();
        for r in results {
            let Some(id) = r.job_id.as_deref().and_then(|s| Uuid::parse_str(s).ok()) else {
                continue;
            };
            if ids.contains(&id) {
                outcomes.insert(id, self.outcome(r));
            }
        }
        for id in ids {
            outcomes.entry(id).or_insert_with(|| AccountReply::Failed {
                class: ErrorClass::Transient,
                retry_after: None,
                message: format!(
                    "the script returned no result for this account (exit code {exit_code}); see the transcript"
                ),
            });
        }
        outcomes
    }

    fn outcome(&self, r: &ResultLine) -> AccountReply {
        if let Some(outcome) = job_outcome(r.status) {
            return AccountReply::Done { outcome };
        }
        let message = self.redact(r.message.as_deref().unwrap_or("no message"));
        let class = classify(r.reason.as_deref(), &message);
        let retry_after = throttling(&message).flatten();
        let advice = advice(r.reason.as_deref(), &message);
        let mut message = match &r.reason {
            Some(reason) if !reason.is_empty() => format!("{reason}: {message}"),
            _ => message,
        };
        if let Some(advice) = advice {
            message = format!("{message} — what to do: {advice}");
        }
        AccountReply::Failed {
            class,
            message,
            retry_after,
        }
    }

    fn redact(&self, text: &str) -> String {
        let mut t = text.to_owned();
        for s in &self.secrets {
            t = t.replace(s.as_str(), "[REDACTED]");
        }
        t
    }
}

/// What a template's status says the job came to; `None` for an error.
fn job_outcome(status: ResultStatus) -> Option<JobEffect> {
    match status {
        ResultStatus::Enabled => Some(JobEffect::Enabled),
        ResultStatus::Unhidden => Some(JobEffect::Unhidden),
        ResultStatus::Converted => Some(JobEffect::Converted),
        ResultStatus::Hidden => Some(JobEffect::Hidden),
        ResultStatus::Shared => Some(JobEffect::Shared),
        ResultStatus::Renamed => Some(JobEffect::Renamed),
        ResultStatus::Already => Some(JobEffect::Already),
        ResultStatus::NotRemote => Some(JobEffect::NotRemote),
        ResultStatus::Error => None,
    }
}

/// Whether every account of a batch of two or more failed with the DC's insufficient access
/// rights (one account alone may be a protected one, AdminSDHolder's doing).
fn emt_missing(last: &HashMap<&str, &ResultLine>) -> bool {
    last.len() >= 2
        && last.values().all(|r| {
            r.status.is_error()
                && classify::refused_for_rights(
                    r.reason.as_deref(),
                    r.message.as_deref().unwrap_or(""),
                )
        })
}

/// Whether an account's cmdlet failed because the process reached the DC without a bind of
/// its own (the snap-in after a logon that holds no network credentials).
fn second_hop_directory(r: &ResultLine) -> bool {
    r.status.is_error()
        && HostProblem::recognise(r.message.as_deref().unwrap_or(""))
            == Some(HostProblem::SecondHopDirectory)
}

/// Whether a result line is an account's cmdlet failing because Exchange dropped the session.
fn dropped(r: &ResultLine) -> bool {
    r.status.is_error()
        && session_dropped(r.error_id.as_deref(), r.message.as_deref().unwrap_or(""))
}

/// Runs a batch in a warm process. When Exchange dropped that process's session (its idle
/// timeout, an IIS recycle; the kept session looked Opened), the accounts it failed did not
/// run: they go once more to a fresh process with a new session, and their second results
/// follow the first ones (the later line for a job is the one that counts).
async fn run_warm(pool: &warm::WarmPool, payload: &Payload) -> Result<HostOutput, WinrmError> {
    let first = pool.run(payload, true).await?;
    let again: Vec<String> = first
        .parsed
        .last_results()
        .into_iter()
        .filter(|(_, r)| dropped(r))
        .map(|(id, _)| id.to_owned())
        .collect();
    if again.is_empty() {
        return Ok(first);
    }
    tracing::info!(
        accounts = again.len(),
        "Exchange dropped the warm session; running those accounts once more in a new process"
    );
    let mut retry = payload.clone();
    retry
        .data
        .accounts
        .retain(|a| again.contains(&a.job_id.to_string()));
    let second = pool.run(&retry, false).await?;
    let mut merged = first;
    merged.extend(second);
    Ok(merged)
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
