//! The event itself: what a job's payload is, whichever format it arrived in. Nothing here
//! knows JSON's wire shape or IdentityIQ's XML; the decoders build these types.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::text_enum::text_enum;

pub const SCHEMA_V1: &str = "mailboxd.event/v1";
pub const ROUTING_KEY_JOINER: &str = "ad.user.created";
pub const ROUTING_KEY_LEAVER: &str = "ad.user.disabled";
/// A mover: a rename or a change of address (`type` `mover`).
pub const ROUTING_KEY_MOVER: &str = "ad.user.renamed";
/// Every routing key of the JSON contract: what the queue is bound to.
pub const ROUTING_KEYS: [&str; 3] = [ROUTING_KEY_JOINER, ROUTING_KEY_LEAVER, ROUTING_KEY_MOVER];
/// Messages above this size are refused before parsing.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Joiner,
    Leaver,
    /// A rename or a change of address of an account's remote mailbox: a new alias, UPN
    /// or primary SMTP address (`rename`).
    Mover,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joiner => "joiner",
            EventKind::Leaver => "leaver",
            EventKind::Mover => "mover",
        }
    }
    pub fn routing_key(self) -> &'static str {
        match self {
            EventKind::Joiner => ROUTING_KEY_JOINER,
            EventKind::Leaver => ROUTING_KEY_LEAVER,
            EventKind::Mover => ROUTING_KEY_MOVER,
        }
    }
    pub fn parse(text: &str) -> Option<EventKind> {
        match text {
            "joiner" => Some(EventKind::Joiner),
            "leaver" => Some(EventKind::Leaver),
            "mover" => Some(EventKind::Mover),
            _ => None,
        }
    }
}

/// What a query string, a form or a column names a kind by (`Deserialize` is serde's, for
/// the event's own JSON).
impl std::str::FromStr for EventKind {
    type Err = crate::text_enum::UnknownText;
    fn from_str(text: &str) -> Result<EventKind, Self::Err> {
        EventKind::parse(text).ok_or_else(|| crate::text_enum::UnknownText {
            what: "job kind",
            text: text.to_owned(),
            expected: &["joiner", "leaver", "mover"],
        })
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A validated sAMAccountName (pre-Windows 2000 logon name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    /// AD's rules: 1–20 characters, none of `" / \ [ ] : ; | = , + * ? < > @`,
    /// no control characters, not only dots and spaces, no trailing dot.
    pub fn parse(raw: &str) -> Result<AccountName, String> {
        let n = raw.chars().count();
        if n == 0 {
            return Err("sam_account_name is empty".into());
        }
        if n > 20 {
            return Err(format!(
                "sam_account_name is {n} characters; Active Directory allows at most 20"
            ));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| "\"/\\[]:;|=,+*?<>@".contains(*c) || c.is_control())
        {
            return Err(format!(
                "sam_account_name contains {c:?}, which Active Directory does not allow"
            ));
        }
        if raw.chars().all(|c| c == '.' || c == ' ') {
            return Err("sam_account_name consists only of dots and spaces".into());
        }
        if raw.ends_with('.') {
            return Err("sam_account_name ends with a dot".into());
        }
        Ok(AccountName(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The key that serialises work per account: AD compares sAMAccountName case-insensitively.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for AccountName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AccountName::parse(&value)
    }
}

impl From<AccountName> for String {
    fn from(a: AccountName) -> String {
        a.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account an event is about, by every name the sender gave: at least one of the
/// sAMAccountName, the objectGUID, the distinguishedName and the userPrincipalName
/// (`Draft::validate` refuses an event with none). Which one finds it in AD, and how the
/// job is keyed before and after, is `Account::lookup_order` and docs/decisions.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sam_account_name: Option<AccountName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_guid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinguished_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// The DC the account was created on: the one sure to have it already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on_server: Option<String>,
}

impl Account {
    /// The name people know the account by: the sAMAccountName, else the UPN, the DN or
    /// the objectGUID the event gave (for logs, alerts and the dashboard).
    pub fn name(&self) -> String {
        if let Some(sam) = &self.sam_account_name {
            return sam.as_str().to_owned();
        }
        self.user_principal_name
            .clone()
            .or_else(|| self.distinguished_name.clone())
            .or_else(|| self.object_guid.map(|g| g.to_string()))
            .unwrap_or_default()
    }

    /// What the jobs table shows as the job's account until AD is read (`jobs.account`):
    /// the name, lower-cased as AD compares it.
    pub fn name_key(&self) -> String {
        self.name().to_lowercase()
    }

    /// The key that serialises work per account as the event alone knows it: the
    /// objectGUID when the event gives one, else `name_key`. The worker re-keys a job on the
    /// objectGUID AD shows once it has read the account (migration 0023).
    pub fn key(&self) -> String {
        self.object_guid
            .map_or_else(|| self.name_key(), |g| g.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Mailbox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_routing_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_smtp_address: Option<String>,
    /// Also enable the cloud archive (`Enable-RemoteMailbox -Archive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<bool>,
    /// `mailbox.type`: a person's mailbox unless the event says otherwise (v1 events
    /// without it, and stored events from before it, are `user`).
    #[serde(rename = "type", default, skip_serializing_if = "MailboxType::is_user")]
    pub kind: MailboxType,
    /// `mailbox.start_date`: the person's first day. The mailbox is created at once, hidden
    /// from the address lists, and made visible on that day (a scheduled step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<StartDate>,
}

text_enum! {
    /// What kind of remote mailbox a joiner asks for (`mailbox.type`): each is one of
    /// Enable-RemoteMailbox's parameter sets (Default, `-Shared`, `-Room`, `-Equipment`) and
    /// one value of `Set-RemoteMailbox -Type` (Regular, Shared, Room, Equipment).
    #[derive(Default)]
    pub enum MailboxType as "mailbox type" {
        /// A person's mailbox (Exchange: RemoteUserMailbox, `-Type Regular`).
        #[default]
        User = "user",
        /// A shared mailbox (RemoteSharedMailbox, `-Shared`).
        Shared = "shared",
        /// A room resource mailbox (RemoteRoomMailbox, `-Room`).
        Room = "room",
        /// An equipment resource mailbox (RemoteEquipmentMailbox, `-Equipment`).
        Equipment = "equipment",
    }
}

impl MailboxType {
    pub fn is_user(&self) -> bool {
        *self == MailboxType::User
    }

    /// A room or equipment mailbox: a resource, not a person's or a team's.
    pub fn is_resource(self) -> bool {
        matches!(self, MailboxType::Room | MailboxType::Equipment)
    }

    /// `Set-RemoteMailbox -Type`'s value for it (ConvertibleRemoteMailboxSubType).
    pub fn exchange_type(self) -> &'static str {
        match self {
            MailboxType::User => "Regular",
            MailboxType::Shared => "Shared",
            MailboxType::Room => "Room",
            MailboxType::Equipment => "Equipment",
        }
    }

    /// Get-RemoteMailbox's RecipientTypeDetails for it.
    pub fn recipient_type_details(self) -> &'static str {
        match self {
            MailboxType::User => "RemoteUserMailbox",
            MailboxType::Shared => "RemoteSharedMailbox",
            MailboxType::Room => "RemoteRoomMailbox",
            MailboxType::Equipment => "RemoteEquipmentMailbox",
        }
    }

    /// The remote mailbox type an msExchRecipientTypeDetails value stands for: 2147483648
    /// RemoteUserMailbox, 8589934592 RemoteRoomMailbox, 17179869184 RemoteEquipmentMailbox,
    /// 34359738368 RemoteSharedMailbox (the RecipientTypeDetails enum,
    /// learn.microsoft.com ff344739(v=exchg.150)); `None` for any other value.
    pub fn from_type_details(details: i64) -> Option<MailboxType> {
        match details {
            2_147_483_648 => Some(MailboxType::User),
            8_589_934_592 => Some(MailboxType::Room),
            17_179_869_184 => Some(MailboxType::Equipment),
            34_359_738_368 => Some(MailboxType::Shared),
            _ => None,
        }
    }
}

/// `mailbox.start_date`: when a joiner's mailbox appears in the address lists. A day (what
/// an HR system knows: `2027-01-04`) becomes an instant through `[joiner] start_time` and
/// `[joiner] utc_offset` (`StartDate::instant`); a date-time with its offset
/// (`2027-01-04T08:00:00+01:00`) is that instant, whatever the configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StartDate {
    Day(NaiveDate),
    At(DateTime<FixedOffset>),
}

impl StartDate {
    /// The longest text either form takes (an RFC 3339 date-time with nanoseconds).
    const MAX_LEN: usize = 40;

    /// `YYYY-MM-DD`, or an RFC 3339 date-time with an offset (`Z` or `±hh:mm`).
    pub fn parse(raw: &str) -> Result<StartDate, String> {
        if raw.len() > Self::MAX_LEN {
            return Err(format!(
                "is {} bytes; a start date is a day (2027-01-04) or an RFC 3339 date-time",
                raw.len()
            ));
        }
        if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
            return Ok(StartDate::Day(day));
        }
        DateTime::parse_from_rfc3339(raw)
            .map(StartDate::At)
            .map_err(|_| {
                format!(
                    "{raw:?} is neither a day (2027-01-04) nor an RFC 3339 date-time with an offset (2027-01-04T08:00:00+01:00)"
                )
            })
    }

    /// The instant the mailbox becomes visible: a day at `time` in `offset`, or the
    /// date-time as given.
    pub fn instant(self, time: NaiveTime, offset: FixedOffset) -> DateTime<Utc> {
        match self {
            StartDate::At(at) => at.with_timezone(&Utc),
            StartDate::Day(day) => {
                let local = day.and_time(time);
                // A fixed offset maps every local time to exactly one instant.
                (local - offset).and_utc()
            }
        }
    }
}

impl TryFrom<String> for StartDate {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        StartDate::parse(&value)
    }
}

impl From<StartDate> for String {
    fn from(d: StartDate) -> String {
        match d {
            StartDate::Day(day) => day.format("%Y-%m-%d").to_string(),
            StartDate::At(at) => at.to_rfc3339(),
        }
    }
}

/// What a mover changes (`rename`): each value the new one, at least one given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Rename {
    /// The new Exchange alias (mailNickname); the remote routing address follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The new userPrincipalName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    /// The new primary SMTP address: set only where the email address policy does not
    /// decide it (EmailAddressPolicyEnabled false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_smtp_address: Option<String>,
}

impl Rename {
    pub fn is_empty(&self) -> bool {
        self.alias.is_none()
            && self.user_principal_name.is_none()
            && self.primary_smtp_address.is_none()
    }
}

/// An event as a decoder read it: every value still unchecked text. The only way from
/// here to an [`Event`] is `Draft::validate` (in `validate`), which applies every rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub id: String,
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub account: DraftAccount,
    pub mailbox: Option<DraftMailbox>,
    pub source: Option<String>,
    pub identity: Option<String>,
    /// A mover's new values (`rename`), still unchecked.
    pub rename: Option<Rename>,
}

/// [`Account`] before validation: at least one of the four names must be there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DraftAccount {
    pub sam_account_name: Option<String>,
    pub object_guid: Option<String>,
    pub distinguished_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub created_on_server: Option<String>,
}

/// [`Mailbox`] before validation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DraftMailbox {
    pub alias: Option<String>,
    pub remote_routing_address: Option<String>,
    pub primary_smtp_address: Option<String>,
    pub archive: Option<bool>,
    /// `mailbox.type` as sent (`user`, `shared`, `room`, `equipment`).
    pub kind: Option<String>,
    /// `mailbox.start_date` as sent (`2027-01-04`, or an RFC 3339 date-time).
    pub start_date: Option<String>,
}

/// Proof that an [`Event`] went through `Draft::validate` (or was read back from the
/// store, which only ever held validated events): its constructor is private to `event`,
/// so no code outside it can build an `Event` field by field and skip a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checked(());

impl Checked {
    /// An event the store kept: it was validated when it was stored.
    fn stored() -> Checked {
        Checked(())
    }
}

/// A validated event: the job's payload, stored as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub account: Account,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<Mailbox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The identity in the IAM system the account belongs to (IdentityIQ: the plan's
    /// `nativeIdentity`): what its outcome names, so the IAM system finds the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A mover's new values (present on a mover only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename: Option<Rename>,
    #[serde(skip, default = "Checked::stored")]
    checked: Checked,
}

impl Event {
    /// For `Draft::validate` alone, once every value passed its rule.
    pub(super) fn validated(
        id: String,
        kind: EventKind,
        occurred_at: DateTime<Utc>,
        account: Account,
        mailbox: Option<Mailbox>,
        source: Option<String>,
        identity: Option<String>,
    ) -> Event {
        Event {
            id,
            kind,
            occurred_at,
            account,
            mailbox,
            source,
            identity,
            rename: None,
            checked: Checked(()),
        }
    }

    /// A mover's checked new values, for `Draft::validate` alone.
    pub(super) fn with_rename(self, rename: Option<Rename>) -> Event {
        Event { rename, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ad_allows_pass_even_with_quotes_and_dollars() {
        for ok in ["o'brien", "svc$", "jürgen", "a`b", "x y"] {
            assert!(AccountName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a\"b",
            "a;b",
            "a|b",
            "aaaaaaaaaaaaaaaaaaaaa",
            "a\nb",
            "ends.",
            "..",
            "a@b",
        ] {
            assert!(AccountName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_start_day_is_its_configured_time_in_its_offset_and_a_date_time_is_itself() {
        let nine = NaiveTime::from_hms_opt(9, 0, 0).expect("a time");
        let cet = FixedOffset::east_opt(3600).expect("an offset");
        let day = StartDate::parse("2027-01-04").expect("a day");
        assert_eq!(
            day.instant(nine, cet).to_rfc3339(),
            "2027-01-04T08:00:00+00:00"
        );
        let at = StartDate::parse("2027-01-04T06:30:00-05:00").expect("a date-time");
        assert_eq!(
            at.instant(nine, cet).to_rfc3339(),
            "2027-01-04T11:30:00+00:00"
        );
        for (d, text) in [(day, "2027-01-04"), (at, "2027-01-04T06:30:00-05:00")] {
            assert_eq!(String::from(d), text);
        }
        for bad in [
            "2027-13-01",
            "04.01.2027",
            "2027-01-04T08:00:00",
            "",
            "tomorrow",
        ] {
            assert!(StartDate::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StartDate::parse(&"9".repeat(41)).is_err());
    }
}
