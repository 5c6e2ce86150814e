//! Faults on demand (`POST /lab/faults`, `mailboxd lab --faults-file`) and Exchange's
//! throttling: what goes wrong on a real Windows side, switched on with one call.
//!
//! ```json
//! {"fault": "cmdlet_errors", "count": 3, "error": "throttled"}
//! {"fault": "cmdlet_errors", "count": 1, "error": "insufficient_access_rights"}
//! {"fault": "cmdlet_errors", "count": 1, "error": "argument_transformation"}
//! {"fault": "cmdlet_errors", "count": 1, "error": "command_not_found"}
//! {"fault": "session_dropped", "count": 1}
//! {"fault": "cmdlet_errors", "count": 1, "error": {"reason": "ProxyAddressExistsException", "message": "…"}}
//! {"fault": "auth_refused", "seconds": 10}
//! {"fault": "host_down", "seconds": 5}
//! {"fault": "stall", "seconds": 2}
//! {"fault": "replication_lag", "account": "jdoe", "seconds": 5}
//! {"fault": "not_synced", "account": "jdoe", "seconds": 30}
//! {"fault": "stray_output", "count": 1, "text": "WARNING: …"}
//! {"fault": "clear"}
//! ```

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use ps_templates::AccountData;
use serde::{Deserialize, Serialize};

/// One request to `POST /lab/faults`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultRequest {
    /// The next `count` cmdlets fail with `error`.
    CmdletErrors { count: u32, error: CmdletError },
    /// WinRM answers 401 to every request for `seconds` (0 or absent: until cleared).
    AuthRefused {
        #[serde(default)]
        seconds: f64,
    },
    /// The host refuses connections for `seconds` (the listener is closed).
    HostDown { seconds: f64 },
    /// Every WinRM response is delayed by `seconds` while the fault lasts (`for_seconds`,
    /// default until cleared).
    Stall {
        seconds: f64,
        #[serde(default)]
        for_seconds: f64,
    },
    /// The account is on no domain controller (LDAP and Exchange's -DomainController) for
    /// `seconds`: replication lag after it was created elsewhere.
    ReplicationLag { account: String, seconds: f64 },
    /// The account is not synced to the cloud for `seconds`.
    NotSynced { account: String, seconds: f64 },
    /// The next `count` PowerShell runs also print `text` (on stdout before the results, and
    /// on stderr), as a logon script, a profile's `Write-Host` or a warning stream does.
    StrayOutput { count: u32, text: String },
    /// Exchange drops the next `count` sessions in use (its idle timeout, an app pool
    /// recycle): the next cmdlet in such a session, and every one after it in that process,
    /// fails with WSMan-InvalidShellID.
    SessionDropped { count: u32 },
    /// Every fault off.
    Clear,
}

/// What a failing cmdlet reports.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum CmdletError {
    Named(NamedError),
    Custom { reason: String, message: String },
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedError {
    /// Exchange's cmdlet budget (PowerShellMaxCmdlets) is spent.
    Throttled,
    /// The object is not on the named domain controller.
    NotFound,
    /// Access denied (the service account lost its RBAC role).
    AccessDenied,
    /// A protected account (adminCount=1, inheritance off): Exchange may not write it.
    InsufficientAccessRights,
    /// A value Exchange cannot convert to its parameter's type.
    ArgumentTransformation,
    /// The cmdlets are not in the host's PowerShell (`exchange.mode = "none"` on a plain host).
    CommandNotFound,
}

/// A failing cmdlet as the template's Get-MailboxdError reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// CategoryInfo.Reason: the exception type.
    pub reason: String,
    /// CategoryInfo.Category.
    pub category: String,
    /// FullyQualifiedErrorId when PowerShell (not Exchange's task) raised it; `None`: the
    /// task's own id, with the routing prefix Exchange adds.
    pub error_id: Option<String>,
    pub message: String,
}

impl Rendered {
    fn exchange(reason: &str, category: &str, message: String) -> Rendered {
        Rendered {
            reason: reason.into(),
            category: category.into(),
            error_id: None,
            message,
        }
    }
}

/// The user-load quota the `throttled` fault reports, and the wait it states.
const QUOTA_REQUESTS: u32 = 1000;
const QUOTA_SECONDS: u32 = 2;
pub const THROTTLED_WAIT_MS: u64 = 500;

impl CmdletError {
    /// What Exchange reports for `cmdlet` on `account` (its DC `dc`).
    pub fn render(&self, cmdlet: &str, account: &AccountData, dc: &str) -> Rendered {
        let identity = &account.identity;
        match self {
            CmdletError::Custom { reason, message } => {
                let category = match reason.as_str() {
                    "UnauthorizedAccessException" => "PermissionDenied",
                    "ThrottlingException" => "ResourceBusy",
                    _ => "NotSpecified",
                };
                Rendered::exchange(reason, category, message.clone())
            }
            CmdletError::Named(NamedError::Throttled) => Rendered::exchange(
                "PSRemotingTransportException",
                "OperationStopped",
                throttled_message(QUOTA_REQUESTS, QUOTA_SECONDS, THROTTLED_WAIT_MS),
            ),
            CmdletError::Named(NamedError::NotFound) => Rendered::exchange(
                "ManagementObjectNotFoundException",
                "NotSpecified",
                format!(
                    "The operation couldn't be performed because object '{identity}' couldn't be found on '{dc}'."
                ),
            ),
            CmdletError::Named(NamedError::AccessDenied) => Rendered::exchange(
                "UnauthorizedAccessException",
                "PermissionDenied",
                "Access is denied. The user isn't assigned to any management roles that allow this cmdlet.".into(),
            ),
            CmdletError::Named(NamedError::InsufficientAccessRights) => Rendered::exchange(
                "ADOperationException",
                "NotSpecified",
                insufficient_rights_message(dc),
            ),
            CmdletError::Named(NamedError::ArgumentTransformation) => {
                transformation_error(cmdlet, account)
            }
            CmdletError::Named(NamedError::CommandNotFound) => command_not_found(cmdlet),
        }
    }
}

/// Exchange's text for a write a protected account's ACL denies (Zachary
/// Loeber's New-MoveRequest transcript; TechNet bb885050; KB 3096158). The DSID varies by
/// DC build.
pub fn insufficient_rights_message(dc: &str) -> String {
    format!(
        "Active Directory operation failed on {dc}. This error is not retriable. Additional information: Insufficient access rights to perform the operation.\nActive directory response: 00002098: SecErr: DSID-03150BB9, problem 4003 (INSUFF_ACCESS_RIGHTS), data 0"
    )
}

/// A value Exchange cannot convert (MicrosoftDocs/office-docs-powershell#1763). The frame and
/// ids are seen in transcripts;
/// for -PrimarySmtpAddress / -RemoteRoutingAddress the whole text is composed by the pattern
/// (no transcript for those parameters was found).
fn transformation_error(cmdlet: &str, account: &AccountData) -> Rendered {
    let (parameter, value) = match &account.primary_smtp_address {
        Some(p) => ("PrimarySmtpAddress", p.clone()),
        None => (
            "RemoteRoutingAddress",
            account.remote_routing_address.clone().unwrap_or_default(),
        ),
    };
    Rendered {
        reason: "ParameterBindingArgumentTransformationException".into(),
        category: "InvalidData".into(),
        error_id: Some(format!("ParameterArgumentTransformationError,{cmdlet}")),
        message: format!(
            "Cannot process argument transformation on parameter '{parameter}'. Cannot convert value \"{value}\" to type \"Microsoft.Exchange.Data.SmtpAddress\". Error: \"The email address '{value}' isn't correct. Please use this format: user name, the @ sign, followed by the domain name. For example, tonysmith@contoso.com or tony.smith@contoso.com.\""
        ),
    }
}

/// Windows PowerShell 5.1 without the Exchange cmdlets (learn.microsoft.com
/// Q&A 1363212, verbatim).
fn command_not_found(cmdlet: &str) -> Rendered {
    Rendered {
        reason: "CommandNotFoundException".into(),
        category: "ObjectNotFound".into(),
        error_id: Some("CommandNotFoundException".into()),
        message: format!(
            "The term '{cmdlet}' is not recognized as the name of a cmdlet, function, script file, or operable program. Check the spelling of the name, or if a path was included, verify that the path is correct and try again."
        ),
    }
}

/// A session Exchange dropped, mid-command (KB 3090768 "InvalidShellID error in
/// RPS", verbatim but for the lab's names).
pub fn session_dropped() -> Rendered {
    Rendered {
        reason: "PSRemotingTransportException".into(),
        category: "OperationStopped".into(),
        error_id: Some("JobFailure".into()),
        message: format!(
            "Processing data for a remote command failed with the following error message: [ClientAccessServer=LAB-EX01,BackEndServer=lab-ex01.corp.example,RequestId={},TimeStamp={}] [FailureCategory=WSMan-InvalidShellID] The request for the Windows Remote Shell with ShellId {} failed because the shell was not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no longer exists on the server. Provide the correct ShellId or create a new shell and retry the operation. For more information, see the about_Remote_Troubleshooting Help topic.",
            uuid::Uuid::new_v4(),
            timestamp(),
            uuid::Uuid::new_v4().to_string().to_uppercase()
        ),
    }
}

fn timestamp() -> String {
    chrono::Utc::now()
        .format("%-m/%-d/%Y %-I:%M:%S %p")
        .to_string()
}

/// The WS-Management user-load quota (PowerShellMaxCmdlets per PowerShellMaxCmdletsTimePeriod):
/// the only text seen for that limit (c7solutions; an EMC 2010 transcript).
/// No Exchange 2013+ text for a spent cmdlet budget was found.
pub fn throttled_message(requests: u32, seconds: u32, wait_ms: u64) -> String {
    format!(
        "The WS-Management service cannot process the request. The user load quota of {requests} requests per {seconds} seconds has been exceeded. Send future requests at a slower rate or raise the quota for this user. The next request from this user will not be approved for at least {wait_ms} milliseconds."
    )
}

/// Exchange's remote PowerShell throttling policy, as the lab enforces it.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    /// PowerShellMaxConcurrency: open Exchange sessions per user (default 18).
    pub max_sessions_per_user: usize,
    /// PowerShellMaxCmdlets per PowerShellMaxCmdletsTimePeriod; `None`: unlimited.
    pub cmdlet_budget: Option<(u32, Duration)>,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            max_sessions_per_user: 18,
            cmdlet_budget: None,
        }
    }
}

/// Faults in force and the throttling counters.
#[derive(Debug, Default)]
pub struct Faults {
    pub cmdlet_errors: VecDeque<CmdletError>,
    pub auth_refused_until: Option<Option<Instant>>,
    pub host_down_until: Option<Instant>,
    pub stall: Option<(Duration, Option<Instant>)>,
    /// Lower-cased sAMAccountName → until when it is hidden from the DC.
    pub replication_lag: HashMap<String, Instant>,
    /// Lower-cased sAMAccountName → until when it is not synced.
    pub not_synced: HashMap<String, Instant>,
    /// Text the next PowerShell runs print besides their results.
    pub stray_output: VecDeque<String>,
    pub throttle: Throttle,
    /// Open Exchange sessions per user, and their high-water mark.
    pub sessions: HashMap<String, usize>,
    pub sessions_high_water: usize,
    /// Cmdlet start times per user within the budget window.
    pub cmdlet_times: HashMap<String, VecDeque<Instant>>,
    pub throttled: u64,
    /// Sessions in use that Exchange will drop (`session_dropped`).
    pub sessions_to_drop: u32,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() && s > 0.0 { s } else { 0.0 })
}

impl Faults {
    /// Applies one request; `host_down` is acted on by the caller (it closes the listener).
    pub fn apply(&mut self, req: &FaultRequest) {
        let now = Instant::now();
        match req {
            FaultRequest::CmdletErrors { count, error } => {
                self.cmdlet_errors
                    .extend(std::iter::repeat_n(error.clone(), *count as usize));
            }
            FaultRequest::AuthRefused { seconds } => {
                self.auth_refused_until = Some((*seconds > 0.0).then(|| now + secs(*seconds)));
            }
            FaultRequest::HostDown { seconds } => {
                self.host_down_until = Some(now + secs(*seconds));
            }
            FaultRequest::Stall {
                seconds,
                for_seconds,
            } => {
                self.stall = Some((
                    secs(*seconds),
                    (*for_seconds > 0.0).then(|| now + secs(*for_seconds)),
                ));
            }
            FaultRequest::ReplicationLag { account, seconds } => {
                self.replication_lag
                    .insert(account.to_lowercase(), now + secs(*seconds));
            }
            FaultRequest::NotSynced { account, seconds } => {
                self.not_synced
                    .insert(account.to_lowercase(), now + secs(*seconds));
            }
            FaultRequest::SessionDropped { count } => {
                self.sessions_to_drop = self.sessions_to_drop.saturating_add(*count);
            }
            FaultRequest::StrayOutput { count, text } => {
                self.stray_output
                    .extend(std::iter::repeat_n(text.clone(), *count as usize));
            }
            FaultRequest::Clear => {
                let throttle = self.throttle;
                let sessions = std::mem::take(&mut self.sessions);
                let high = self.sessions_high_water;
                let throttled = self.throttled;
                *self = Faults {
                    throttle,
                    sessions,
                    sessions_high_water: high,
                    throttled,
                    ..Faults::default()
                };
            }
        }
    }

    pub fn auth_refused(&self) -> bool {
        match self.auth_refused_until {
            Some(None) => true,
            Some(Some(until)) => Instant::now() < until,
            None => false,
        }
    }

    pub fn stall(&self) -> Option<Duration> {
        match self.stall {
            Some((d, None)) => Some(d),
            Some((d, Some(until))) if Instant::now() < until => Some(d),
            _ => None,
        }
    }

    /// Exchange sessions open now, over all users.
    pub fn open_sessions(&self) -> usize {
        self.sessions.values().sum()
    }

    /// Whether the account is (still) invisible on the domain controllers.
    pub fn lagging(&self, sam: &str) -> bool {
        self.replication_lag
            .get(&sam.to_lowercase())
            .is_some_and(|until| Instant::now() < *until)
    }

    pub fn unsynced(&self, sam: &str) -> bool {
        self.not_synced
            .get(&sam.to_lowercase())
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Opens an Exchange session for `user`, or Exchange's refusal when the user is at
    /// PowerShellMaxConcurrency.
    pub fn open_session(&mut self, user: &str) -> Result<(), String> {
        let max = self.throttle.max_sessions_per_user;
        let n = self.sessions.entry(user.to_owned()).or_default();
        if *n >= max {
            self.throttled += 1;
            // Composed: the sentence from an EXO transcript
            // (Microsoft365DSC#359), the on-prem prefix and record from an Exchange AuthZ
            // refusal (learn.microsoft.com Q&A 310545); no on-prem transcript of exactly this.
            return Err(format!(
                "[lab-ex01.corp.example] Processing data from remote server lab-ex01.corp.example failed with the following error message: [ClientAccessServer=LAB-EX01,BackEndServer=lab-ex01.corp.example,RequestId={},TimeStamp={}] [AuthZRequestId={}][FailureCategory=AuthZ-AuthorizationException] Fail to create a runspace because you have exceeded the maximum number of connections allowed : {max} for the policy party : MaxConcurrency. Please close existing runspace and try again.\nPolicy: CN=GlobalThrottlingPolicy_{},CN=Global Settings,CN=LAB,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=corp,DC=example; \nSnapshot: Owner:\tSid~{user}~WSMan~false\nBudgetType:\tWSMan\nActiveRunspaces:\t{max}/{max} For more information, see the about_Remote_Troubleshooting Help topic.",
                uuid::Uuid::new_v4(),
                timestamp(),
                uuid::Uuid::new_v4(),
                uuid::Uuid::new_v4(),
            ));
        }
        *n += 1;
        let open: usize = self.sessions.values().sum();
        self.sessions_high_water = self.sessions_high_water.max(open);
        Ok(())
    }

    /// Counts a runspace of `user` that no mailboxd process opened (an administrator's
    /// console with the same account): Exchange counts it against PowerShellMaxConcurrency
    /// like any other, and nothing mailboxd does removes it.
    pub fn hold_foreign_session(&mut self, user: &str) {
        *self.sessions.entry(user.to_owned()).or_default() += 1;
    }

    pub fn close_session(&mut self, user: &str) {
        if let Some(n) = self.sessions.get_mut(user) {
            *n = n.saturating_sub(1);
        }
    }

    /// The error the next cmdlet must fail with, if any: an injected one, else the cmdlet
    /// budget when it is spent.
    pub fn next_cmdlet(&mut self, user: &str) -> Option<CmdletError> {
        if let Some(e) = self.cmdlet_errors.pop_front() {
            return Some(e);
        }
        let (max, window) = self.throttle.cmdlet_budget?;
        let now = Instant::now();
        let times = self.cmdlet_times.entry(user.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= max as usize {
            self.throttled += 1;
            let wait = times
                .front()
                .map(|t| window.saturating_sub(now.duration_since(*t)).as_millis() as u64 + 1)
                .unwrap_or(1);
            return Some(CmdletError::Custom {
                reason: "PSRemotingTransportException".into(),
                message: throttled_message(max, window.as_secs().max(1) as u32, wait),
            });
        }
        None
    }

    /// Counts one recipient cmdlet the process ran against the user's budget: every call
    /// counts in Exchange's PowerShellMaxCmdlets, not only the first of each account.
    pub fn charge_cmdlet(&mut self, user: &str) {
        if self.throttle.cmdlet_budget.is_some() {
            let times = self.cmdlet_times.entry(user.to_owned()).or_default();
            times.push_back(Instant::now());
        }
    }

    /// What `GET /lab/faults` shows.
    pub fn describe(&self) -> serde_json::Value {
        let now = Instant::now();
        let left = |t: &Instant| t.saturating_duration_since(now).as_secs_f64();
        serde_json::json!({
            "cmdlet_errors": self.cmdlet_errors,
            "auth_refused": self.auth_refused(),
            "host_down_for_s": self.host_down_until.as_ref().map(left),
            "stall_s": self.stall().map(|d| d.as_secs_f64()),
            "stray_output": self.stray_output,
            "replication_lag": self.replication_lag.iter().filter(|(_, t)| **t > now).map(|(k, t)| (k.clone(), left(t))).collect::<HashMap<_, _>>(),
            "not_synced": self.not_synced.iter().filter(|(_, t)| **t > now).map(|(k, t)| (k.clone(), left(t))).collect::<HashMap<_, _>>(),
            "throttle": {
                "max_sessions_per_user": self.throttle.max_sessions_per_user,
                "cmdlet_budget": self.throttle.cmdlet_budget.map(|(n, w)| serde_json::json!({"cmdlets": n, "window_s": w.as_secs_f64()})),
            },
        })
    }
}
