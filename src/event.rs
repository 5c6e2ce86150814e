//! The event contract (design §2): what the IAM system publishes, parsed and validated.
//!
//! Every value here is data that later reaches LDAP filters and PowerShell, so each
//! field is checked against the rules Active Directory and Exchange apply, and an event
//! that breaks one is refused with a reason an IAM engineer can act on.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const SCHEMA_V1: &str = "mailboxd.event/v1";
pub const ROUTING_KEY_JOINER: &str = "ad.user.created";
pub const ROUTING_KEY_LEAVER: &str = "ad.user.disabled";
/// Messages above this size are refused before parsing.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Joiner,
    Leaver,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Joiner => "joiner",
            EventKind::Leaver => "leaver",
        }
    }
    pub fn routing_key(self) -> &'static str {
        match self {
            EventKind::Joiner => ROUTING_KEY_JOINER,
            EventKind::Leaver => ROUTING_KEY_LEAVER,
        }
    }
    pub fn parse(text: &str) -> Option<EventKind> {
        match text {
            "joiner" => Some(EventKind::Joiner),
            "leaver" => Some(EventKind::Leaver),
            _ => None,
        }
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub sam_account_name: AccountName,
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
}

/// Why a message could not become a job. The text goes to the poison table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("message is {0} bytes; the limit is {MAX_MESSAGE_BYTES} bytes")]
    TooLarge(usize),
    #[error("unsupported content type {0:?}: send application/json")]
    ContentType(String),
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("unknown schema {0:?}: this mailboxd understands \"{SCHEMA_V1}\"")]
    Schema(String),
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid field {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("IdentityIQ XML could not be read: {0}")]
    Xml(String),
}

/// The media type of a Content-Type value, lower-cased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// What the intake checks beyond the contract itself (from `[amqp]`).
#[derive(Debug, Clone, Default)]
pub struct IntakeRules {
    /// IdentityIQ application names whose AccountRequests are for mailboxd.
    pub iiq_applications: Vec<String>,
    /// Domains a remote routing address may use; empty: any.
    pub allowed_routing_domains: Vec<String>,
}

/// What one delivery came to: the events it carries (an IdentityIQ plan may carry several,
/// or none for mailboxd), and what the log should say about it.
#[derive(Debug, Default)]
pub struct Delivery {
    pub events: Vec<Event>,
    pub ignored: Vec<String>,
    /// Credential attribute names an IdentityIQ sender included (values never kept).
    pub credentials: Vec<String>,
}

/// Parses a delivery of either format: the JSON contract, or IdentityIQ XML (by content
/// type `application/xml`/`text/xml`, or a body that starts with `<`).
pub fn parse_delivery(
    body: &[u8],
    content_type: Option<&str>,
    message_id: Option<&str>,
    routing_key: &str,
    rules: &IntakeRules,
) -> Result<Delivery, EventError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(EventError::TooLarge(body.len()));
    }
    let mut out = if crate::iiq::looks_like_xml(body, content_type) {
        let p = crate::iiq::parse(body, message_id, Utc::now(), &rules.iiq_applications)?;
        Delivery {
            events: p.events,
            ignored: p.ignored,
            credentials: p.credentials,
        }
    } else {
        Delivery {
            events: vec![parse(body, content_type, message_id, routing_key)?],
            ..Delivery::default()
        }
    };
    if !rules.allowed_routing_domains.is_empty() {
        for e in &mut out.events {
            if let Some(rra) = e
                .mailbox
                .as_ref()
                .and_then(|m| m.remote_routing_address.as_deref())
            {
                let domain = rra.rsplit_once('@').map_or("", |(_, d)| d);
                if !rules
                    .allowed_routing_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain))
                {
                    return Err(invalid(
                        "mailbox.remote_routing_address",
                        format!(
                            "domain {domain:?} is not one of the allowed routing domains ({})",
                            rules.allowed_routing_domains.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The JSON as sent; every field optional so that a missing one gets a precise error.
#[derive(Deserialize)]
struct Wire {
    schema: Option<String>,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    occurred_at: Option<String>,
    account: Option<WireAccount>,
    mailbox: Option<WireMailbox>,
    source: Option<String>,
}

#[derive(Deserialize)]
struct WireAccount {
    sam_account_name: Option<String>,
    object_guid: Option<String>,
    distinguished_name: Option<String>,
    user_principal_name: Option<String>,
    created_on_server: Option<String>,
}

#[derive(Deserialize)]
struct WireMailbox {
    alias: Option<String>,
    remote_routing_address: Option<String>,
    primary_smtp_address: Option<String>,
    archive: Option<bool>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EventError {
    EventError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Parses an AMQP delivery body. `message_id` is the AMQP property, used when the body has no id;
/// `routing_key` must agree with the event type when it is one of the two known keys.
pub fn parse(
    body: &[u8],
    content_type: Option<&str>,
    message_id: Option<&str>,
    routing_key: &str,
) -> Result<Event, EventError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(EventError::TooLarge(body.len()));
    }
    if let Some(ct) = content_type {
        let base = media_type(ct);
        if !base.is_empty() && base != "application/json" {
            return Err(EventError::ContentType(ct.to_owned()));
        }
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    match wire.schema.as_deref() {
        Some(SCHEMA_V1) => {}
        Some(other) => return Err(EventError::Schema(other.to_owned())),
        None => return Err(EventError::Missing("schema")),
    }
    let id = match wire.id.or_else(|| message_id.map(str::to_owned)) {
        Some(id) => id,
        None => return Err(EventError::Missing("id (or the AMQP message_id property)")),
    };
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(invalid("id", "must be 1-200 printable characters"));
    }
    let kind_text = wire.kind.ok_or(EventError::Missing("type"))?;
    let kind = EventKind::parse(&kind_text).ok_or_else(|| {
        invalid(
            "type",
            format!("{kind_text:?} is neither \"joiner\" nor \"leaver\""),
        )
    })?;
    if (routing_key == ROUTING_KEY_JOINER || routing_key == ROUTING_KEY_LEAVER)
        && routing_key != kind.routing_key()
    {
        return Err(invalid(
            "type",
            format!("{kind} event published with routing key {routing_key}"),
        ));
    }
    let occurred_text = wire.occurred_at.ok_or(EventError::Missing("occurred_at"))?;
    let occurred_at = DateTime::parse_from_rfc3339(&occurred_text)
        .map_err(|e| {
            invalid(
                "occurred_at",
                format!("{e}: expected RFC 3339, e.g. 2026-11-22T10:00:00Z"),
            )
        })?
        .with_timezone(&Utc);
    let wa = wire.account.ok_or(EventError::Missing("account"))?;
    let sam = wa
        .sam_account_name
        .ok_or(EventError::Missing("account.sam_account_name"))?;
    let sam_account_name =
        AccountName::parse(&sam).map_err(|r| invalid("account.sam_account_name", r))?;
    let object_guid = match wa.object_guid {
        Some(g) => Some(
            Uuid::parse_str(g.trim_matches(|c| c == '{' || c == '}'))
                .map_err(|e| invalid("account.object_guid", e.to_string()))?,
        ),
        None => None,
    };
    let user_principal_name = wa
        .user_principal_name
        .map(|u| {
            check_address(&u)
                .map(|_| u)
                .map_err(|r| invalid("account.user_principal_name", r))
        })
        .transpose()?;
    let distinguished_name = wa
        .distinguished_name
        .map(|d| {
            check_text(&d, 2048)
                .map(|_| d)
                .map_err(|r| invalid("account.distinguished_name", r))
        })
        .transpose()?;
    let created_on_server = wa
        .created_on_server
        .map(|h| {
            check_hostname(&h)
                .map(|_| h)
                .map_err(|r| invalid("account.created_on_server", r))
        })
        .transpose()?;
    let mailbox = match wire.mailbox {
        Some(m) => {
            let alias = m
                .alias
                .map(|a| {
                    check_alias(&a)
                        .map(|_| a)
                        .map_err(|r| invalid("mailbox.alias", r))
                })
                .transpose()?;
            let remote_routing_address = m
                .remote_routing_address
                .map(|a| {
                    check_address(&a)
                        .map(|_| a)
                        .map_err(|r| invalid("mailbox.remote_routing_address", r))
                })
                .transpose()?;
            let primary_smtp_address = m
                .primary_smtp_address
                .map(|a| {
                    check_address(&a)
                        .map(|_| a)
                        .map_err(|r| invalid("mailbox.primary_smtp_address", r))
                })
                .transpose()?;
            Some(Mailbox {
                alias,
                remote_routing_address,
                primary_smtp_address,
                archive: m.archive,
            })
        }
        None => None,
    };
    let source = wire
        .source
        .map(|s| {
            check_text(&s, 100)
                .map(|_| s)
                .map_err(|r| invalid("source", r))
        })
        .transpose()?;
    Ok(Event {
        id,
        kind,
        occurred_at,
        account: Account {
            sam_account_name,
            object_guid,
            distinguished_name,
            user_principal_name,
            created_on_server,
        },
        mailbox,
        source,
    })
}

fn check_text(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1-{max} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

/// An SMTP address or UPN: `local@domain`, a plain dot-atom local part, a DNS domain.
pub fn check_address(s: &str) -> Result<(), String> {
    if s.len() > 254 {
        return Err("longer than 254 characters".into());
    }
    let (local, domain) = s
        .rsplit_once('@')
        .ok_or_else(|| format!("{s:?} is not an address of the form name@domain"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(format!("{s:?}: the part before @ must be 1-64 characters"));
    }
    let ok_local = local
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !ok_local || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(format!(
            "{s:?}: the part before @ has characters SMTP does not allow"
        ));
    }
    check_hostname(domain).map_err(|r| format!("{s:?}: domain {r}"))
}

/// A DNS name: dot-separated labels of letters, digits and hyphens.
pub fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(format!("{s:?} is not a valid DNS name"));
        }
    }
    Ok(())
}

/// Exchange aliases: letters, digits and ``!#$%&'*+-/=?^_`{|}~`` and dots (not leading/trailing).
fn check_alias(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err("must be 1-64 characters".into());
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    if !ok || s.starts_with('.') || s.ends_with('.') {
        return Err(format!(
            "{s:?} has characters Exchange does not allow in an alias"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn routing_domains_outside_the_allow_list_are_refused() {
        let body = br#"{"schema":"mailboxd.event/v1","id":"r1","type":"joiner","occurred_at":"2026-11-22T10:00:00Z","account":{"sam_account_name":"jdoe"},"mailbox":{"remote_routing_address":"jdoe@evil.example"}}"#;
        let rules = IntakeRules {
            allowed_routing_domains: vec!["tenant.mail.onmicrosoft.com".into()],
            ..IntakeRules::default()
        };
        let err = parse_delivery(body, None, None, "ad.user.created", &rules).unwrap_err();
        assert!(
            err.to_string()
                .contains("not one of the allowed routing domains"),
            "{err}"
        );
        let ok = body
            .to_vec()
            .iter()
            .map(|b| *b as char)
            .collect::<String>()
            .replace("evil.example", "tenant.mail.onmicrosoft.com");
        assert_eq!(
            parse_delivery(ok.as_bytes(), None, None, "ad.user.created", &rules)
                .unwrap()
                .events
                .len(),
            1
        );
    }

    use super::*;

    fn joiner(sam: &str) -> String {
        serde_json::json!({
            "schema": SCHEMA_V1, "id": "e1", "type": "joiner",
            "occurred_at": "2026-11-22T10:00:00Z",
            "account": {"sam_account_name": sam, "object_guid": "b1f0a2c3-d4e5-f607-1829-3a4b5c6d7e8f"},
            "mailbox": {"remote_routing_address": "jdoe@tenant.mail.onmicrosoft.com"},
            "source": "identityiq"
        })
        .to_string()
    }

    #[test]
    fn a_valid_joiner_parses() {
        let e = parse(
            joiner("jdoe").as_bytes(),
            Some("application/json"),
            None,
            ROUTING_KEY_JOINER,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::Joiner);
        assert_eq!(e.account.sam_account_name.as_str(), "jdoe");
        assert_eq!(e.source.as_deref(), Some("identityiq"));
    }

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
    fn each_bad_event_gets_a_precise_reason() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "not valid JSON"),
            (
                br#"{"schema":"mailboxd.event/v9"}"#.to_vec(),
                "unknown schema",
            ),
            (
                br#"{"schema":"mailboxd.event/v1","type":"joiner"}"#.to_vec(),
                "missing field id",
            ),
            (joiner("a;b").into_bytes(), "account.sam_account_name"),
            (vec![b' '; MAX_MESSAGE_BYTES + 1], "limit"),
        ];
        for (body, want) in cases {
            let err = parse(&body, None, None, ROUTING_KEY_JOINER)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
        let err = parse(joiner("jdoe").as_bytes(), None, None, ROUTING_KEY_LEAVER).unwrap_err();
        assert!(err.to_string().contains("routing key"), "{err}");
        let err = parse(
            joiner("jdoe").as_bytes(),
            Some("text/plain"),
            None,
            ROUTING_KEY_JOINER,
        )
        .unwrap_err();
        assert!(matches!(err, EventError::ContentType(_)));
    }

    #[test]
    fn message_id_property_stands_in_for_a_missing_id() {
        let body = joiner("jdoe").replace("\"id\":\"e1\",", "");
        let e = parse(body.as_bytes(), None, Some("amqp-id-7"), ROUTING_KEY_JOINER).unwrap();
        assert_eq!(e.id, "amqp-id-7");
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("john.doe@corp.example").is_ok());
        assert!(check_address("x@tenant.mail.onmicrosoft.com").is_ok());
        for bad in [
            "nodomain", "a@", "@b.c", "a b@c.d", "a@b..c", "a@-b.c", "a\"@b.c",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
