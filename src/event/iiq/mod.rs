//! IdentityIQ's XML, accepted besides the JSON contract (docs/events.md): a `ProvisioningPlan`
//! with `AccountRequest`s, or a bare `AccountRequest`. Each AccountRequest for one of the
//! configured AD applications becomes one event: `op="Create"` → joiner, `op="Disable"`
//! (or an `IIQDisabled` attribute request set to true) → leaver; anything else is ignored
//! with a log line.
//!
//! IdentityIQ rules often carry the Exchange service account's credentials in the plan
//! (`username`, `pwdText`). mailboxd never needs them: credential-looking attributes are
//! dropped before anything is stored or logged — the poison copy of a bad plan included
//! (`sanitize`) — and a warning asks the sender to stop sending them. Reading a request's
//! values (`request`) is apart from turning them into an event (here), so that the one
//! place that skips credentials is the one place values are read.

mod request;
mod sanitize;

use chrono::{DateTime, Utc};
use xml::Element;

use super::error::EventError;
use super::format::strip_bom;
use super::model::{Draft, DraftAccount, DraftMailbox, Event, EventKind, Rename};
pub use request::is_credential;
use request::{Values, children, credential_names, renames, sets_disabled};

/// What one IdentityIQ document came to.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// AccountRequests that were not for mailboxd, described for the log.
    pub ignored: Vec<String>,
    /// Names of credential attributes that were found and dropped.
    pub credentials: Vec<String>,
}

/// Parses an IdentityIQ document into events. `message_id` (the AMQP property) makes the
/// event ids stable across redeliveries; without it the document's content does.
pub fn parse(
    body: &[u8],
    message_id: Option<&str>,
    received_at: DateTime<Utc>,
    applications: &[String],
) -> Result<Parsed, EventError> {
    let root = document(body)?;
    let base_id = match message_id {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => content_id(body),
    };
    let identity = plan_identity(&root);
    let mut out = Parsed::default();
    for (i, req) in account_requests(&root)?.into_iter().enumerate() {
        out.credentials
            .extend(credential_names(req).map(str::to_owned));
        match for_mailboxd(req, applications) {
            Ok(kind) => out.events.push(to_event(
                req,
                kind,
                format!("{base_id}#{i}"),
                received_at,
                identity.clone(),
            )?),
            Err(why) => out.ignored.push(format!("AccountRequest #{i} {why}")),
        }
    }
    out.credentials.sort();
    out.credentials.dedup();
    Ok(out)
}

/// The document with every credential value removed, for the poison table. `None` when
/// the document cannot be parsed: then nobody can tell where a credential might be, and
/// the body is withheld.
pub(crate) fn sanitized(body: &[u8]) -> Option<Vec<u8>> {
    let root = document(body).ok()?;
    Some(sanitize::rewrite(&root).into_bytes())
}

/// The parsed document: UTF-8 (a byte-order mark allowed), no DTDs or entities.
fn document(body: &[u8]) -> Result<Element, EventError> {
    let text = std::str::from_utf8(strip_bom(body))
        .map_err(|e| EventError::Xml(format!("not UTF-8: {e}")))?;
    xml::parse_allowing_external_doctype(text).map_err(|e| EventError::Xml(e.0))
}

/// The identity a plan is for: its `nativeIdentity` (IdentityIQ's identity name on an
/// identity-level plan), or an `identity` attribute. Checked with the event it goes into.
fn plan_identity(root: &Element) -> Option<String> {
    if root.name != "ProvisioningPlan" {
        return None;
    }
    root.attr("nativeIdentity")
        .or(root.attr("identity"))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

fn account_requests(root: &Element) -> Result<Vec<&Element>, EventError> {
    match root.name.as_str() {
        "ProvisioningPlan" => Ok(children(root, "AccountRequest").collect()),
        "AccountRequest" => Ok(vec![root]),
        other => Err(EventError::Xml(format!(
            "root element <{other}> is neither <ProvisioningPlan> nor <AccountRequest>"
        ))),
    }
}

/// The kind of event a request is, or why it is not one for mailboxd (for the log).
fn for_mailboxd(req: &Element, applications: &[String]) -> Result<EventKind, String> {
    let app = req.attr("application").unwrap_or_default();
    let op = req.attr("op").unwrap_or_default();
    if !applications.iter().any(|a| a.eq_ignore_ascii_case(app)) {
        return Err(format!("for application {app:?} (op {op:?})"));
    }
    match op {
        "Create" => Ok(EventKind::Joiner),
        "Disable" => Ok(EventKind::Leaver),
        "Modify" if sets_disabled(req) => Ok(EventKind::Leaver),
        "Modify" if renames(req) => Ok(EventKind::Mover),
        _ => Err(format!("op {op:?} for {app:?}: nothing for mailboxd")),
    }
}

fn to_event(
    req: &Element,
    kind: EventKind,
    id: String,
    received_at: DateTime<Utc>,
    identity: Option<String>,
) -> Result<Event, EventError> {
    let values = Values::of(req);
    let mailbox = mailbox(&values);
    let mut account = account(req, &values)?;
    let rename = (kind == EventKind::Mover).then(|| {
        // A Modify's userPrincipalName is the new one, not what finds the account.
        account.user_principal_name = None;
        rename(&values)
    });
    Draft {
        id,
        kind,
        occurred_at: received_at,
        account,
        mailbox: (kind != EventKind::Mover && mailbox != DraftMailbox::default())
            .then_some(mailbox),
        source: Some("identityiq".into()),
        identity,
        rename,
    }
    .validate(received_at)
    .map_err(in_iiq_terms)
}

/// The IdentityIQ attribute each field of the model is read from: a broken rule is
/// reported with the name the sender wrote.
const ATTRIBUTES: [(&str, &str); 14] = [
    ("account.sam_account_name", "sAMAccountName"),
    ("account.object_guid", "objectGUID"),
    ("account.user_principal_name", "userPrincipalName"),
    ("account.created_on_server", "createdOnServer"),
    (
        "account.distinguished_name",
        "nativeIdentity or distinguishedName",
    ),
    ("mailbox.alias", "mailNickname"),
    ("mailbox.remote_routing_address", "remoteRoutingAddress"),
    ("mailbox.primary_smtp_address", "mail"),
    ("mailbox.type", "mailboxType"),
    ("mailbox.start_date", "startDate"),
    ("rename.alias", "mailNickname"),
    ("rename.user_principal_name", "userPrincipalName"),
    ("rename.primary_smtp_address", "mail"),
    ("id", "id (the AMQP message_id)"),
];

fn in_iiq_terms(e: EventError) -> EventError {
    match e {
        EventError::Invalid { field, reason } => EventError::Invalid {
            field: ATTRIBUTES
                .iter()
                .find(|(model, _)| *model == field)
                .map_or(field, |(_, attribute)| attribute),
            reason,
        },
        other => other,
    }
}

/// The account: its name from `sAMAccountName` or a `nativeIdentity` that is not a DN; its
/// DN from a `nativeIdentity` that is one, or `distinguishedName`.
fn account(req: &Element, values: &Values) -> Result<DraftAccount, EventError> {
    let native = req.attr("nativeIdentity").filter(|n| !n.is_empty());
    let native_dn = native.filter(|n| n.contains('=') && n.contains(','));
    let sam = values
        .get("sAMAccountName")
        .or(native.filter(|_| native_dn.is_none()))
        .ok_or(EventError::Missing(
            "sAMAccountName (an AttributeRequest, or a nativeIdentity that is not a DN)",
        ))?;
    let owned = |name| values.get(name).map(str::to_owned);
    Ok(DraftAccount {
        sam_account_name: Some(sam.to_owned()),
        object_guid: owned("objectGUID"),
        user_principal_name: owned("userPrincipalName"),
        created_on_server: owned("createdOnServer"),
        distinguished_name: native_dn
            .or(values.get("distinguishedName"))
            .map(str::to_owned),
    })
}

fn mailbox(values: &Values) -> DraftMailbox {
    let owned = |name| values.get(name).map(str::to_owned);
    DraftMailbox {
        alias: owned("mailNickname"),
        remote_routing_address: owned("remoteRoutingAddress"),
        primary_smtp_address: owned("mail"),
        archive: values
            .get("archive")
            .map(|v| v.eq_ignore_ascii_case("true")),
        // IdentityIQ's AD connector has no attribute for the remote mailbox's type:
        // mailboxd reads its own, `mailboxType` (docs/events.md, "IdentityIQ").
        kind: owned("mailboxType"),
        // Nor for the first day: the plan carries the identity's start date (an identity
        // attribute such as `startDate`, mapped in the provisioning policy) as `startDate`.
        start_date: owned("startDate"),
    }
}

/// A mover's new values: what a Modify sets of `mailNickname`, `userPrincipalName` and
/// `mail` (IdentityIQ's AD connector's names; `sAMAccountName` names the account, renamed
/// by the connector before mailboxd hears of it).
fn rename(values: &Values) -> Rename {
    let owned = |name| values.get(name).map(str::to_owned);
    Rename {
        alias: owned("mailNickname"),
        user_principal_name: owned("userPrincipalName"),
        primary_smtp_address: owned("mail"),
    }
}

/// A stable id for a document without a message id: redeliveries of the same bytes
/// dedup to the same jobs.
fn content_id(body: &[u8]) -> String {
    content_id_with("iiq", body)
}

/// `<prefix>-<FNV-1a of the body>-<its length>`: what a format without ids (midPoint's
/// too) names a body by.
pub(crate) fn content_id_with(prefix: &str, body: &[u8]) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}-{h:016x}-{}", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing_drops_credential_values_and_keeps_the_rest() {
        let doc = br#"<ProvisioningPlan><AccountRequest application="Active Directory" op="Create">
            <Attributes><Map><entry key="pwdText" value="S3cret!"/><entry key="flow" value="Joiner"/></Map></Attributes>
            <AttributeRequest name="password" op="Set"><Value><String>Hunter2</String></Value></AttributeRequest>
            <AttributeRequest name="sAMAccountName" op="Set" value="jdoe"/>
        </AccountRequest></ProvisioningPlan>"#;
        let clean = String::from_utf8(sanitized(doc).unwrap()).unwrap();
        assert!(
            !clean.contains("S3cret!") && !clean.contains("Hunter2"),
            "{clean}"
        );
        assert!(
            clean.contains("jdoe") && clean.contains("Joiner"),
            "{clean}"
        );
        assert!(sanitized(b"<ProvisioningPlan><oops").is_none());
    }

    #[test]
    fn a_modify_that_sets_mail_nickname_upn_or_mail_is_a_mover_named_by_its_attributes() {
        let doc = br#"<ProvisioningPlan nativeIdentity="Jane.Smith">
            <AccountRequest application="Active Directory" op="Modify" nativeIdentity="CN=J Smith,OU=Staff,DC=corp,DC=example">
              <AttributeRequest name="sAMAccountName" value="jsmith"/>
              <AttributeRequest name="mailNickname" op="Set" value="jdoe"/>
              <AttributeRequest name="userPrincipalName" op="Set" value="jane.doe@corp.example"/>
              <AttributeRequest name="mail" op="Set"><Value><String>jane.doe@corp.example</String></Value></AttributeRequest>
            </AccountRequest>
            <AccountRequest application="Active Directory" op="Modify" nativeIdentity="other">
              <AttributeRequest name="mail" op="Remove" value="x@corp.example"/>
            </AccountRequest>
        </ProvisioningPlan>"#;
        let apps = vec!["Active Directory".to_owned()];
        let p = parse(doc, Some("m2"), Utc::now(), &apps).unwrap();
        assert_eq!(p.events.len(), 1, "{:?}", p.ignored);
        let mover = &p.events[0];
        assert_eq!(mover.kind, EventKind::Mover);
        assert_eq!(mover.account.name(), "jsmith");
        // The new UPN is the rename's, never what finds the account.
        assert_eq!(mover.account.user_principal_name, None);
        assert_eq!(mover.mailbox, None);
        let r = mover.rename.as_ref().unwrap();
        assert_eq!(r.alias.as_deref(), Some("jdoe"));
        assert_eq!(
            r.user_principal_name.as_deref(),
            Some("jane.doe@corp.example")
        );
        assert_eq!(
            r.primary_smtp_address.as_deref(),
            Some("jane.doe@corp.example")
        );
        let bad = String::from_utf8_lossy(doc).replace("value=\"jdoe\"", "value=\"j doe\"");
        let err = parse(bad.as_bytes(), Some("m3"), Utc::now(), &apps).unwrap_err();
        assert!(err.to_string().contains("mailNickname"), "{err}");
    }

    #[test]
    fn each_request_for_mailboxd_is_an_event_and_the_rest_are_ignored_with_a_reason() {
        let doc = br#"<ProvisioningPlan nativeIdentity="John.Doe">
            <AccountRequest application="Active Directory" op="Create" nativeIdentity="CN=J Doe,OU=Staff,DC=corp,DC=example">
              <AttributeRequest name="sAMAccountName" value="jdoe"/>
              <AttributeRequest name="pwdText" value="S3cret!"/>
              <AttributeRequest name="mail" value="john.doe@corp.example"/>
            </AccountRequest>
            <AccountRequest application="Active Directory" op="Modify" nativeIdentity="leaver1">
              <AttributeRequest name="IIQDisabled"><Value><String>true</String></Value></AttributeRequest>
            </AccountRequest>
            <AccountRequest application="Active Directory" op="Enable" nativeIdentity="x"/>
            <AccountRequest application="Workday" op="Create" nativeIdentity="y"/>
        </ProvisioningPlan>"#;
        let apps = vec!["active directory".to_owned()];
        let p = parse(doc, Some("m1"), Utc::now(), &apps).unwrap();
        assert_eq!(p.events.len(), 2);
        let (joiner, leaver) = (&p.events[0], &p.events[1]);
        assert_eq!(
            (joiner.id.as_str(), joiner.kind),
            ("m1#0", EventKind::Joiner)
        );
        assert_eq!(joiner.account.name(), "jdoe");
        // The plan's nativeIdentity is the identity both requests belong to.
        assert_eq!(joiner.identity.as_deref(), Some("John.Doe"));
        assert_eq!(leaver.identity.as_deref(), Some("John.Doe"));
        assert_eq!(
            joiner.account.distinguished_name.as_deref(),
            Some("CN=J Doe,OU=Staff,DC=corp,DC=example")
        );
        assert_eq!(
            joiner
                .mailbox
                .as_ref()
                .and_then(|m| m.primary_smtp_address.as_deref()),
            Some("john.doe@corp.example")
        );
        assert_eq!(
            (leaver.id.as_str(), leaver.kind),
            ("m1#1", EventKind::Leaver)
        );
        assert_eq!(leaver.account.name(), "leaver1");
        assert_eq!(leaver.mailbox, None);
        assert_eq!(
            p.ignored,
            [
                "AccountRequest #2 op \"Enable\" for \"Active Directory\": nothing for mailboxd",
                "AccountRequest #3 for application \"Workday\" (op \"Create\")",
            ]
        );
        assert_eq!(p.credentials, ["pwdText"]);
    }

    #[test]
    fn mailbox_type_is_read_and_a_wrong_one_is_named_by_its_attribute() {
        let doc = |t: &str| {
            format!(
                r#"<AccountRequest application="Active Directory" op="Create" nativeIdentity="room1">
                <AttributeRequest name="mailboxType" value="{t}"/></AccountRequest>"#
            )
        };
        let apps = vec!["Active Directory".to_owned()];
        let p = parse(doc("room").as_bytes(), Some("m"), Utc::now(), &apps).unwrap();
        let kind = p.events[0].mailbox.as_ref().map(|m| m.kind);
        assert_eq!(kind, Some(crate::event::MailboxType::Room));
        let err = parse(doc("Raum").as_bytes(), Some("m"), Utc::now(), &apps).unwrap_err();
        assert!(err.to_string().contains("mailboxType"), "{err}");
    }

    #[test]
    fn the_start_date_is_read_from_start_date_and_a_wrong_one_named_by_it() {
        let doc = |d: &str| {
            format!(
                r#"<AccountRequest application="Active Directory" op="Create" nativeIdentity="jnew">
                <AttributeRequest name="startDate" value="{d}"/></AccountRequest>"#
            )
        };
        let apps = vec!["Active Directory".to_owned()];
        let p = parse(doc("2027-01-04").as_bytes(), Some("m"), Utc::now(), &apps).unwrap();
        let day = p.events[0].mailbox.as_ref().and_then(|m| m.start_date);
        assert_eq!(day.map(String::from).as_deref(), Some("2027-01-04"));
        let err = parse(doc("next monday").as_bytes(), Some("m"), Utc::now(), &apps).unwrap_err();
        assert!(err.to_string().contains("startDate"), "{err}");
    }
}
