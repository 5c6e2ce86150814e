//! Faults on demand (`POST /lab/faults`, `mailboxd lab --faults-file`) and Exchange's
//! throttling: what goes wrong on a real Windows side, switched on with one call.
//!
//! ```json
//! {"fault": "cmdlet_errors", "count": 3, "error": "throttled"}
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
}

impl CmdletError {
    /// (exception type, message) as Exchange reports it.
    pub fn render(&self, identity: &str, dc: &str) -> (String, String) {
        match self {
            CmdletError::Custom { reason, message } => (reason.clone(), message.clone()),
            CmdletError::Named(NamedError::Throttled) => (
                "ThrottlingException".into(),
                throttled_message(60),
            ),
            CmdletError::Named(NamedError::NotFound) => (
                "ManagementObjectNotFoundException".into(),
                format!(
                    "The operation couldn't be performed because object '{identity}' couldn't be found on '{dc}'."
                ),
            ),
            CmdletError::Named(NamedError::AccessDenied) => (
                "UnauthorizedAccessException".into(),
                "Access is denied. The user isn't assigned to any management roles that allow this cmdlet.".into(),
            ),
        }
    }
}

/// The lab's text for a spent cmdlet budget (PowerShellMaxCmdlets). The exact production
/// wording is not in our notes; the shape follows the runspace-budget message.
pub fn throttled_message(wait_s: u64) -> String {
    format!(
        "Cmdlet execution was stopped because you have exceeded your budget to run cmdlets (PowerShellMaxCmdlets). Please wait for {wait_s} seconds."
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
            return Err(format!(
                "[lab-ex01.corp.example] Connecting to remote server lab-ex01.corp.example failed with the following error message : [ClientAccessServer=LAB-EX01,BackEndServer=lab-ex01.corp.example,RequestId={},TimeStamp={}] [FailureCategory=AuthZ-AuthorizationException] Fail to create a runspace because you have exceeded the maximum number of connections allowed : {max} For more information, see the about_Remote_Troubleshooting Help topic.",
                uuid::Uuid::new_v4(),
                chrono::Utc::now().format("%-m/%-d/%Y %-I:%M:%S %p")
            ));
        }
        *n += 1;
        let open: usize = self.sessions.values().sum();
        self.sessions_high_water = self.sessions_high_water.max(open);
        Ok(())
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
                .map(|t| window.saturating_sub(now.duration_since(*t)).as_secs() + 1)
                .unwrap_or(1);
            return Some(CmdletError::Custom {
                reason: "ThrottlingException".into(),
                message: throttled_message(wait),
            });
        }
        times.push_back(now);
        None
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
