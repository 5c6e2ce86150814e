//! IdentityIQ's XML, accepted besides the JSON contract (design §2): a `ProvisioningPlan`
//! with `AccountRequest`s, or a bare `AccountRequest`. Each AccountRequest for one of the
//! configured AD applications becomes one event: `op="Create"` → joiner, `op="Disable"`
//! (or an `IIQDisabled` attribute request set to true) → leaver; anything else is ignored
//! with a log line.
//!
//! IdentityIQ rules often carry the Exchange service account's credentials in the plan
//! (`username`, `pwdText`). mailboxd never needs them: credential-looking attributes are
//! dropped before anything is stored or logged — the poison copy of a bad plan included —
//! and a warning asks the sender to stop sending them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{self, Account, AccountName, Event, EventError, EventKind, Mailbox};
use winrm::xml::{self, Element};

/// What one IdentityIQ document came to.
#[derive(Debug, Default)]
pub struct Parsed {
    pub events: Vec<Event>,
    /// AccountRequests that were not for mailboxd, described for the log.
    pub ignored: Vec<String>,
    /// Names of credential attributes that were found and dropped.
    pub credentials: Vec<String>,
}

/// Whether an attribute name looks like a credential: `pwdText`, `password`, `*Password*`,
/// `*secret*` (any case).
pub fn is_credential(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "pwdtext" || n.contains("password") || n.contains("secret")
}

/// Whether the body is XML rather than JSON (content type, or its first character).
pub fn looks_like_xml(body: &[u8], content_type: Option<&str>) -> bool {
    if let Some(ct) = content_type {
        let base = event::media_type(ct);
        if base == "application/xml" || base == "text/xml" {
            return true;
        }
        if !base.is_empty() {
            return false;
        }
    }
    let text = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

fn text_of(body: &[u8]) -> Result<&str, EventError> {
    let text = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    std::str::from_utf8(text).map_err(|e| EventError::Xml(format!("not UTF-8: {e}")))
}

/// Parses an IdentityIQ document into events. `message_id` (the AMQP property) makes the
/// event ids stable across redeliveries; without it the document's content does.
pub fn parse(
    body: &[u8],
    message_id: Option<&str>,
    received_at: DateTime<Utc>,
    applications: &[String],
) -> Result<Parsed, EventError> {
    let root =
        xml::parse_allowing_external_doctype(text_of(body)?).map_err(|e| EventError::Xml(e.0))?;
    let requests: Vec<&Element> = match root.name.as_str() {
        "ProvisioningPlan" => root
            .children
            .iter()
            .filter(|c| c.name == "AccountRequest")
            .collect(),
        "AccountRequest" => vec![&root],
        other => {
            return Err(EventError::Xml(format!(
                "root element <{other}> is neither <ProvisioningPlan> nor <AccountRequest>"
            )));
        }
    };
    let base_id = match message_id {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => content_id(body),
    };
    let mut out = Parsed::default();
    for (i, req) in requests.iter().enumerate() {
        collect_credentials(req, &mut out.credentials);
        let app = attr(req, "application").unwrap_or_default();
        let op = attr(req, "op").unwrap_or_default();
        if !applications.iter().any(|a| a.eq_ignore_ascii_case(app)) {
            out.ignored.push(format!(
                "AccountRequest #{i} for application {app:?} (op {op:?})"
            ));
            continue;
        }
        let kind = match op {
            "Create" => EventKind::Joiner,
            "Disable" => EventKind::Leaver,
            "Modify" if sets_disabled(req) => EventKind::Leaver,
            _ => {
                out.ignored.push(format!(
                    "AccountRequest #{i} op {op:?} for {app:?}: nothing for mailboxd"
                ));
                continue;
            }
        };
        out.events
            .push(to_event(req, kind, format!("{base_id}#{i}"), received_at)?);
    }
    out.credentials.sort();
    out.credentials.dedup();
    Ok(out)
}

fn attr<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The value of an `AttributeRequest` or Map `entry`: its `value` attribute, else the text
/// of `<Value><String>…</String></Value>` (or `<Value>…</Value>`).
fn value_of(e: &Element) -> Option<String> {
    if let Some(v) = attr(e, "value") {
        return Some(v.to_owned());
    }
    let v = e.children.iter().find(|c| c.name == "Value")?;
    let inner = v
        .children
        .iter()
        .find(|c| c.name == "String")
        .map_or(v.text.as_str(), |s| s.text.as_str());
    Some(inner.trim().to_owned())
}

/// Every (name, value) the request carries: AttributeRequests and its Attributes map.
fn named_values(req: &Element) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for c in &req.children {
        if c.name == "AttributeRequest"
            && let (Some(n), Some(v)) = (attr(c, "name"), value_of(c))
        {
            out.push((n.to_owned(), v));
        }
    }
    for entry in req
        .children
        .iter()
        .filter(|c| c.name == "Attributes")
        .flat_map(|a| a.children.iter().filter(|m| m.name == "Map"))
        .flat_map(|m| m.children.iter().filter(|e| e.name == "entry"))
    {
        if let (Some(k), Some(v)) = (attr(entry, "key"), value_of(entry)) {
            out.push((k.to_owned(), v));
        }
    }
    out
}

fn collect_credentials(req: &Element, found: &mut Vec<String>) {
    for c in &req.children {
        if c.name == "AttributeRequest"
            && let Some(n) = attr(c, "name")
            && is_credential(n)
        {
            found.push(n.to_owned());
        }
    }
    for a in req.children.iter().filter(|c| c.name == "Attributes") {
        for m in a.children.iter().filter(|m| m.name == "Map") {
            for e in m.children.iter().filter(|e| e.name == "entry") {
                if let Some(k) = attr(e, "key")
                    && is_credential(k)
                {
                    found.push(k.to_owned());
                }
            }
        }
    }
}

fn sets_disabled(req: &Element) -> bool {
    named_values(req)
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("IIQDisabled") && v.eq_ignore_ascii_case("true"))
}

fn get<'a>(values: &'a [(String, String)], name: &str) -> Option<&'a str> {
    values
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EventError {
    EventError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn to_event(
    req: &Element,
    kind: EventKind,
    id: String,
    received_at: DateTime<Utc>,
) -> Result<Event, EventError> {
    // Credentials are never read, whatever the request holds.
    let values: Vec<(String, String)> = named_values(req)
        .into_iter()
        .filter(|(n, _)| !is_credential(n))
        .collect();
    let native = attr(req, "nativeIdentity").filter(|n| !n.is_empty());
    let native_is_dn = native.is_some_and(|n| n.contains('=') && n.contains(','));
    let sam = get(&values, "sAMAccountName")
        .or(native.filter(|_| !native_is_dn))
        .ok_or(EventError::Missing(
            "sAMAccountName (an AttributeRequest, or a nativeIdentity that is not a DN)",
        ))?;
    let sam_account_name = AccountName::parse(sam).map_err(|r| invalid("sAMAccountName", r))?;
    let object_guid = get(&values, "objectGUID")
        .map(|g| {
            Uuid::parse_str(g.trim_matches(|c| c == '{' || c == '}'))
                .map_err(|e| invalid("objectGUID", e.to_string()))
        })
        .transpose()?;
    let user_principal_name = get(&values, "userPrincipalName")
        .map(|u| {
            event::check_address(u)
                .map(|_| u.to_owned())
                .map_err(|r| invalid("userPrincipalName", r))
        })
        .transpose()?;
    let created_on_server = get(&values, "createdOnServer")
        .map(|h| {
            event::check_hostname(h)
                .map(|_| h.to_owned())
                .map_err(|r| invalid("createdOnServer", r))
        })
        .transpose()?;
    let distinguished_name = native
        .filter(|_| native_is_dn)
        .or(get(&values, "distinguishedName"))
        .map(str::to_owned);
    let address = |name: &'static str| {
        get(&values, name)
            .map(|a| {
                event::check_address(a)
                    .map(|_| a.to_owned())
                    .map_err(|r| invalid(name, r))
            })
            .transpose()
    };
    let mailbox = Mailbox {
        alias: get(&values, "mailNickname").map(str::to_owned),
        remote_routing_address: address("remoteRoutingAddress")?,
        primary_smtp_address: address("mail")?,
        archive: get(&values, "archive").map(|v| v.eq_ignore_ascii_case("true")),
    };
    let has_mailbox = mailbox != Mailbox::default();
    Ok(Event {
        id,
        kind,
        occurred_at: received_at,
        account: Account {
            sam_account_name,
            object_guid,
            distinguished_name,
            user_principal_name,
            created_on_server,
        },
        mailbox: has_mailbox.then_some(mailbox),
        source: Some("identityiq".into()),
    })
}

/// A stable id for a document without a message id: redeliveries of the same bytes
/// dedup to the same jobs.
fn content_id(body: &[u8]) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("iiq-{h:016x}-{}", body.len())
}

/// The document with every credential value removed, for the poison table. `None` when
/// the document cannot be parsed: then nobody can tell where a credential might be, and
/// the body is withheld.
pub fn sanitized(body: &[u8]) -> Option<Vec<u8>> {
    let root = xml::parse_allowing_external_doctype(text_of(body).ok()?).ok()?;
    let mut out = String::with_capacity(body.len());
    write(&root, &mut out);
    Some(out.into_bytes())
}

const REMOVED: &str = "[removed by mailboxd: credentials are never stored]";

fn write(e: &Element, out: &mut String) {
    use xml::escape;
    let secret = (e.name == "AttributeRequest" && attr(e, "name").is_some_and(is_credential))
        || (e.name == "entry" && attr(e, "key").is_some_and(is_credential));
    out.push('<');
    out.push_str(&e.name);
    for (k, v) in &e.attrs {
        let v = if secret && k == "value" { REMOVED } else { v };
        out.push_str(&format!(" {k}=\"{}\"", escape(v)));
    }
    if secret || (e.children.is_empty() && e.text.trim().is_empty()) {
        out.push_str("/>");
        return;
    }
    out.push('>');
    out.push_str(&escape(e.text.as_str()));
    for c in &e.children {
        write(c, out);
    }
    out.push_str(&format!("</{}>", e.name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_are_recognised() {
        for n in [
            "pwdText",
            "password",
            "ExchangePassword",
            "clientSecret",
            "PASSWORD",
        ] {
            assert!(is_credential(n), "{n}");
        }
        for n in ["sAMAccountName", "username", "flow", "pwdLastSet"] {
            assert!(!is_credential(n), "{n}");
        }
    }

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
}
