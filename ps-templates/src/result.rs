//! The `MAILBOXD-RESULT` line: what the templates report for one account (or for the
//! session), with its status and scope as enums, read once where stdout is parsed.

use serde::{Deserialize, Serialize};

use crate::RESULT_MARKER;

/// What a template did for one account, as `status` on its result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// `Enable-RemoteMailbox` made the account a remote mailbox.
    Enabled,
    /// It was a hidden remote mailbox (a rehire): made visible again.
    Unhidden,
    /// It was a remote mailbox of another type than the joiner asks (most often a
    /// leaver's converted to shared, a rehire now): converted (`Set-RemoteMailbox -Type`,
    /// `Regular` for a person) and made visible.
    Converted,
    /// `Set-RemoteMailbox` hid the remote mailbox from the address lists.
    Hidden,
    /// A leaver under `leaver.action = "shared"`: the user mailbox was converted to shared
    /// (`Set-RemoteMailbox -Type Shared`), and hidden unless configured otherwise.
    Shared,
    /// A mover: `Set-RemoteMailbox` gave the remote mailbox its new alias, UPN or primary
    /// address (and the remote routing address that follows the alias).
    Renamed,
    /// It was so already: nothing changed.
    Already,
    /// A leaver without a remote mailbox: nothing to hide.
    NotRemote,
    /// A cmdlet failed (or the session did not open): `reason`, `error_id` and `message`
    /// say what.
    #[default]
    Error,
}

impl ResultStatus {
    pub fn is_error(self) -> bool {
        self == ResultStatus::Error
    }
}

/// What a result line is about when it is not one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultScope {
    /// The Exchange session did not open: every account of the batch failed with it.
    Session,
}

/// One `MAILBOXD-RESULT` line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ResultLine {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// `session` for a failure to open the Exchange session; absent per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ResultScope>,
    pub status: ResultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_routing_address: Option<String>,
}

impl ResultLine {
    /// A line with only its status (what the lab's emulation starts from).
    pub fn with_status(status: ResultStatus) -> ResultLine {
        ResultLine {
            status,
            ..ResultLine::default()
        }
    }

    pub fn to_line(&self) -> String {
        format!(
            "{RESULT_MARKER}{}",
            serde_json::to_string(self).unwrap_or_default()
        )
    }
}
