//! The outgoing contract, as `event` is the incoming one: the `mailboxd.outcome/v1`
//! message a job's final state (or its first wait for the cloud sync) reports to the IAM
//! system (docs/events.md, docs/outcome.schema.json) — its body, what the IAM system can do
//! about a failure (`what_to_do`), its routing key — and the states of its delivery to
//! IdentityIQ. Assembled here alone; `store` writes the message into the outcome outbox in
//! the transaction that moved the job, and the publishers send what `store` keeps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Event, EventKind, MailboxType};
use crate::job::{ErrorClass, JobEffect, JobState, JobStep};
use crate::text_enum::text_enum;

/// The `schema` of every outcome message.
pub(crate) const OUTCOME_SCHEMA_V1: &str = "mailboxd.outcome/v1";

text_enum! {
    /// What an outcome message reports: how the job ended, or that it waits for the sync.
    pub enum OutcomeResult as "outcome result" {
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        Superseded = "superseded",
        WaitingForSync = "waiting_for_sync",
        /// The second, cloud answer of a joiner that succeeded on premises: its Exchange
        /// Online mailbox is confirmed (`cloud` says how).
        CloudConfirmed = "cloud_confirmed",
        /// The second answer: no cloud mailbox was seen by the deadline (`error` says why).
        CloudFailed = "cloud_failed",
        /// A joiner's start date came: the mailbox it created hidden (`hidden_until`) is in
        /// the address lists now, as AD shows (the step `make_visible` succeeded).
        Visible = "visible",
    }
}

impl OutcomeResult {
    /// The result a job's new state reports, if it reports one.
    pub fn of(state: JobState) -> Option<OutcomeResult> {
        match state {
            JobState::Succeeded => Some(OutcomeResult::Succeeded),
            JobState::Failed => Some(OutcomeResult::Failed),
            JobState::Cancelled => Some(OutcomeResult::Cancelled),
            JobState::Superseded => Some(OutcomeResult::Superseded),
            JobState::WaitingForSync => Some(OutcomeResult::WaitingForSync),
            JobState::Queued | JobState::Running | JobState::Retrying | JobState::Scheduled => None,
        }
    }

    /// The result a job's new state reports, the job being `step` of its event: the step
    /// that makes a mailbox visible reports its success as `visible`.
    pub fn of_step(state: JobState, step: Option<JobStep>) -> Option<OutcomeResult> {
        match (OutcomeResult::of(state)?, step) {
            (OutcomeResult::Succeeded, Some(JobStep::MakeVisible)) => Some(OutcomeResult::Visible),
            (result, _) => Some(result),
        }
    }
}

text_enum! {
    /// Where an outcome's delivery over one HTTP channel stands: IdentityIQ's
    /// (`outcomes.iiq_state`) or the outcome callback's (`outcomes.callback_state`); a row
    /// not for that channel has none.
    pub enum HttpDelivery as "HTTP delivery state" {
        /// Due: the channel's deliverer claims it.
        Pending = "pending",
        /// The receiver accepted it (IdentityIQ launched the workflow; the callback answered 2xx).
        Sent = "sent",
        /// The receiver refused it with a lasting 4xx: one alert, never retried.
        Refused = "refused",
    }
}

text_enum! {
    /// What the account is in Exchange's eyes, as an outcome reports it.
    pub enum RecipientType as "recipient type" {
        /// A cloud mailbox the on-premises Exchange knows of.
        RemoteMailbox = "remote_mailbox",
        /// A mailbox on the on-premises servers.
        OnPremMailbox = "onprem_mailbox",
        /// A mail user (what Enable-RemoteMailbox converts).
        MailUser = "mail_user",
        /// Another recipient type.
        Other = "other",
        /// Not a recipient.
        None = "none",
    }
}

/// The account as the outcome names it: what AD showed, else what the event said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeAccount {
    /// Absent only when AD was not read and the event named the account otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sam_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_guid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinguished_name: Option<String>,
}

/// A recipient's addresses as AD shows them (Exchange's address policy usually decided
/// the primary one, not the event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxAddresses {
    /// `mail`, or the `SMTP:` proxy address when `mail` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_smtp_address: Option<String>,
    pub proxy_addresses: Vec<String>,
    /// `targetAddress` without its `SMTP:` prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_routing_address: Option<String>,
    pub recipient_type: RecipientType,
    /// A remote mailbox's type, from msExchRecipientTypeDetails: `user`, `shared`, `room`
    /// or `equipment` (absent for another recipient, or a remote type mailboxd does not
    /// manage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox_type: Option<MailboxType>,
    /// The remote mailbox has a cloud archive (msExchArchiveGUID is set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archive: bool,
    pub hidden: bool,
}

/// The account and its mailbox as a domain controller showed them during the attempt:
/// after the change when the worker read it again to verify, else before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryView {
    pub account: OutcomeAccount,
    pub mailbox: MailboxAddresses,
}

text_enum! {
    /// A failure's class as the outcome reports it: a job's `ErrorClass`, or the cloud's.
    pub enum ReportedClass as "reported error class" {
        Transient = "transient",
        NotSynced = "not_synced",
        Permanent = "permanent",
        Systemic = "systemic",
        /// No cloud mailbox was seen by the cloud deadline (`cloud_failed`).
        NoCloudMailbox = "no_cloud_mailbox",
    }
}

impl From<ErrorClass> for ReportedClass {
    fn from(c: ErrorClass) -> ReportedClass {
        match c {
            ErrorClass::Transient => ReportedClass::Transient,
            ErrorClass::NotSynced => ReportedClass::NotSynced,
            ErrorClass::Permanent => ReportedClass::Permanent,
            ErrorClass::Systemic => ReportedClass::Systemic,
        }
    }
}

/// A failure as the IAM system is told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportedFailure {
    pub message: String,
    pub class: ReportedClass,
    pub what_to_do: &'static str,
}

text_enum! {
    /// Where mailboxd learnt the cloud's state (`[cloud] confirm`).
    pub enum CloudSourceName as "cloud source" {
        /// AD alone: Entra's Exchange hybrid writeback on the user.
        Directory = "directory",
        /// Microsoft Graph: the user's Exchange plan, provisioning errors and mailboxSettings.
        Graph = "graph",
    }
}

impl CloudAnswer {
    /// The answer of a watch, before anything showed the mailbox.
    pub fn watched(
        source: CloudSourceName,
        watched_since: DateTime<Utc>,
        deadline: DateTime<Utc>,
        checks: i32,
    ) -> CloudAnswer {
        CloudAnswer {
            source,
            watched_since,
            deadline,
            checks,
            legacy_exchange_dn: None,
            external_directory_object_id: None,
            archive_status: None,
            user_principal_name: None,
            proxy_addresses: Vec::new(),
            purpose: None,
        }
    }
}

/// The cloud answer's own part: where it was learnt and what showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudAnswer {
    pub source: CloudSourceName,
    /// When the on-premises success started the watch.
    pub watched_since: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    /// Checks made (LDAP reads of the account).
    pub checks: i32,
    /// The cloud mailbox's LegacyExchangeDN, from the `X500:` proxy address written back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_exchange_dn: Option<String>,
    /// `msDS-ExternalDirectoryObjectId` (`User_<Entra object id>`), when written back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_directory_object_id: Option<String>,
    /// `msExchArchiveStatus`, when written back (1: an active archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_status: Option<i64>,
    /// The user's UPN in Entra ID (Graph).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// The addresses Exchange Online holds for the user (Graph's `proxyAddresses`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_addresses: Vec<String>,
    /// The cloud mailbox's `userPurpose` (Graph's mailboxSettings): user, shared, room, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// Why a watch ended without a cloud mailbox, and what the IAM system can do about it.
#[derive(Debug, Clone, Copy)]
pub struct CloudFailure<'a> {
    pub message: &'a str,
    pub what_to_do: &'static str,
}

/// The `mailboxd.outcome/v1` message (docs/events.md, docs/outcome.schema.json).
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeMessage {
    pub schema: &'static str,
    /// The outcome's own id: the AMQP `message_id`, the same on a resend.
    pub id: Uuid,
    /// The event it answers: also the AMQP `correlation_id`.
    pub event_id: String,
    pub job_id: Uuid,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub result: OutcomeResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobEffect>,
    pub at: DateTime<Utc>,
    pub attempts: i32,
    /// The identity in the IAM system, when the event named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    pub account: OutcomeAccount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<MailboxAddresses>,
    /// A mover: the addresses as AD showed them before the change (`mailbox` is after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_before: Option<MailboxAddresses>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ReportedFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<Uuid>,
    /// The cloud answer (`cloud_confirmed`, `cloud_failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudAnswer>,
    /// A leaver whose mailbox AD shows as a shared one without an archive: its Exchange
    /// Online licence may be removed now (`licence_removable`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub licence_removable: bool,
    /// A succeeded leaver: whether Exchange Online follows the change made on premises.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_the_cloud: Option<InTheCloud>,
    /// The W3C `traceparent` the event came with (also the AMQP header `traceparent`), so
    /// the IAM system finds its own trace again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
    /// A joiner with a start date still ahead: the mailbox exists, hidden from the address
    /// lists until this instant, when `joiner.visible` follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_until: Option<DateTime<Utc>>,
}

text_enum! {
    /// Whether a change made on premises reaches Exchange Online.
    pub enum CloudFollows as "cloud follows" {
        /// The directory sync carries it.
        NextSync = "next_sync",
        /// The tenant manages Exchange attributes in the cloud: it stays on premises.
        CloudManaged = "cloud_managed",
    }
}

/// Where a leaver's change takes effect in Exchange Online (`in_the_cloud`).
#[derive(Debug, Clone, Serialize)]
pub struct InTheCloud {
    pub state: CloudFollows,
    pub note: &'static str,
}

impl OutcomeMessage {
    /// `joiner.succeeded`, `leaver.failed`, `joiner.waiting_for_sync`, …
    pub fn routing_key(&self) -> String {
        routing_key(self.kind, self.result)
    }
}

/// What the IAM system can do about a failure of this class.
pub fn what_to_do(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Permanent => {
            "correct the account or the event (the error names what Exchange refused) and send the event again, or ask operations to retry the job"
        }
        ErrorClass::NotSynced => {
            "the account did not reach Entra ID in time: have the identity team check Entra Connect's sync scope, then ask operations to retry the job"
        }
        ErrorClass::Transient | ErrorClass::Systemic => {
            "nothing on the identity: mailboxd's operators were alerted and will retry the job once the Windows side works again"
        }
    }
}

/// `joiner.succeeded`, `leaver.failed`, `joiner.waiting_for_sync`, …
pub fn routing_key(kind: EventKind, result: OutcomeResult) -> String {
    format!("{kind}.{result}")
}

/// The job an outcome answers, as the message names it.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredJob<'a> {
    pub id: Uuid,
    pub event_id: &'a str,
    pub kind: EventKind,
    pub event: &'a Event,
    /// The newer job of the account that made this one moot.
    pub superseded_by: Option<Uuid>,
    /// The W3C `traceparent` the event came with, validated at intake.
    pub trace_parent: Option<&'a str>,
}

/// How a job ended (or that it waits), for its outcome message.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub result: OutcomeResult,
    pub outcome: Option<JobEffect>,
    /// Attempts used (a deferral gives its attempt back).
    pub attempts: i32,
    pub error: Option<(ErrorClass, &'a str)>,
    pub view: Option<&'a DirectoryView>,
    /// The account as the attempt read it before any change (a mover's `mailbox_before`).
    pub before: Option<&'a DirectoryView>,
    /// The tenant manages Exchange attributes in the cloud: a change made on premises stays
    /// there (`leaver.exchange_attributes`).
    pub stays_on_premises: bool,
    /// A joiner left hidden until its start date.
    pub hidden_until: Option<DateTime<Utc>>,
}

impl Ending<'_> {
    /// The ending of a job an operator cancelled or a newer event superseded: no attempt,
    /// no directory read.
    pub(crate) fn moved(result: OutcomeResult, attempts: i32) -> Ending<'static> {
        Ending {
            result,
            outcome: None,
            attempts,
            error: None,
            view: None,
            before: None,
            stays_on_premises: false,
            hidden_until: None,
        }
    }
}

/// The outcome message of `job` ending as `ending`.
pub fn message(job: AnsweredJob<'_>, ending: Ending<'_>) -> OutcomeMessage {
    let account = match ending.view {
        Some(v) => v.account.clone(),
        None => {
            let a = &job.event.account;
            OutcomeAccount {
                sam_account_name: a.sam_account_name.as_ref().map(|s| s.to_string()),
                object_guid: a.object_guid,
                user_principal_name: a.user_principal_name.clone(),
                distinguished_name: a.distinguished_name.clone(),
            }
        }
    };
    OutcomeMessage {
        schema: OUTCOME_SCHEMA_V1,
        id: Uuid::new_v4(),
        event_id: job.event_id.to_owned(),
        job_id: job.id,
        kind: job.kind,
        result: ending.result,
        outcome: ending.outcome,
        at: Utc::now(),
        attempts: ending.attempts,
        identity: job.event.identity.clone(),
        account,
        mailbox: ending.view.map(|v| v.mailbox.clone()),
        mailbox_before: ending
            .before
            .filter(|_| job.kind == EventKind::Mover)
            .map(|v| v.mailbox.clone()),
        error: ending.error.map(|(class, message)| ReportedFailure {
            message: message.to_owned(),
            class: class.into(),
            what_to_do: what_to_do(class),
        }),
        superseded_by: job.superseded_by,
        cloud: None,
        licence_removable: licence_removable(job.kind, &ending),
        in_the_cloud: in_the_cloud(job.kind, &ending),
        trace_parent: job.trace_parent.map(str::to_owned),
        hidden_until: ending.hidden_until,
    }
}

/// Where a succeeded leaver's change takes effect in Exchange Online, in words.
fn in_the_cloud(kind: EventKind, ending: &Ending<'_>) -> Option<InTheCloud> {
    if kind != EventKind::Leaver || ending.result != OutcomeResult::Succeeded {
        return None;
    }
    Some(if ending.stays_on_premises {
        InTheCloud {
            state: CloudFollows::CloudManaged,
            note: "done on premises only: the tenant manages the mailbox's Exchange attributes in the cloud (IsExchangeCloudManaged), so the directory sync does not carry this change to Exchange Online; make it there (Set-Mailbox -HiddenFromAddressListsEnabled $true, or -Type Shared for a conversion)",
        }
    } else {
        InTheCloud {
            state: CloudFollows::NextSync,
            note: "done on premises; Exchange Online follows with the next directory sync",
        }
    })
}

/// What the IAM system can do about a joiner whose cloud mailbox did not appear. From AD
/// alone mailboxd cannot tell which of the three it is.
pub const CLOUD_WHAT_TO_DO: &str = "check in the Microsoft 365 admin center that the user has an Exchange Online licence, that its mailbox is not held \"Setting up\" by a provisioning error (Get-User's/Graph's service provisioning errors name it), and that Entra Connect syncs the account; once fixed, the mailbox appears with the next sync (mailboxd does not watch again)";

/// The second, cloud outcome of a joiner that succeeded on premises: `cloud_confirmed` with
/// the addresses AD shows, or `cloud_failed` with why.
pub fn cloud_message(
    job: AnsweredJob<'_>,
    attempts: i32,
    view: Option<&DirectoryView>,
    cloud: CloudAnswer,
    failure: Option<CloudFailure<'_>>,
) -> OutcomeMessage {
    let result = match failure {
        None => OutcomeResult::CloudConfirmed,
        Some(_) => OutcomeResult::CloudFailed,
    };
    let mut m = message(job, Ending::moved(result, attempts));
    if let Some(v) = view {
        m.account = v.account.clone();
        m.mailbox = Some(v.mailbox.clone());
    }
    m.error = failure.map(|f| ReportedFailure {
        message: f.message.to_owned(),
        class: ReportedClass::NoCloudMailbox,
        what_to_do: f.what_to_do,
    });
    m.cloud = Some(cloud);
    m
}

/// Whether the IAM system may remove the leaver's Exchange Online licence: the leaver
/// succeeded and AD shows a shared remote mailbox without an archive. A shared mailbox needs
/// no licence unless it holds over 50 GB, uses in-place archiving or is on litigation hold
/// (learn.microsoft.com, "Remove a license from a shared mailbox"); the archive is in AD, the size and the hold are not (docs/events.md).
fn licence_removable(kind: EventKind, ending: &Ending<'_>) -> bool {
    let shared = ending.view.is_some_and(|v| {
        v.mailbox.recipient_type == RecipientType::RemoteMailbox
            && v.mailbox.mailbox_type == Some(MailboxType::Shared)
            && !v.mailbox.archive
    });
    kind == EventKind::Leaver && ending.result == OutcomeResult::Succeeded && shared
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_steps_success_is_visible_and_its_other_endings_are_as_any_jobs() {
        let step = Some(JobStep::MakeVisible);
        let of = OutcomeResult::of_step;
        assert_eq!(of(JobState::Succeeded, step), Some(OutcomeResult::Visible));
        assert_eq!(
            of(JobState::Succeeded, None),
            Some(OutcomeResult::Succeeded)
        );
        assert_eq!(
            of(JobState::Superseded, step),
            Some(OutcomeResult::Superseded)
        );
        assert_eq!(of(JobState::Scheduled, step), None);
        assert_eq!(
            routing_key(EventKind::Joiner, OutcomeResult::Visible),
            "joiner.visible"
        );
    }
}
