//! The rules Active Directory and Exchange apply to each value of an event. Every value
//! later reaches an LDAP filter, a PowerShell cmdlet (as data) or a PostgreSQL text column,
//! so each is checked here, once, with a reason an IAM engineer can act on. A decoder hands
//! over a [`Draft`]; [`Draft::validate`] is the only way to an [`Event`], so no decoder —
//! today's JSON and IdentityIQ ones or a future one — can skip a check.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::error::EventError;
use super::model::{
    Account, AccountName, Draft, DraftAccount, DraftMailbox, Event, EventKind, Mailbox,
    MailboxType, Rename, StartDate,
};

/// How far in the future an `occurred_at` may lie: the clock skew Kerberos tolerates by
/// default between a client and a DC. An event from further ahead would order every later
/// event of its account behind it ("latest intent wins").
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

impl Draft {
    /// The event, if every value obeys its rule; else the first broken rule, named by
    /// the model's field (`account.sam_account_name`, …). `now` bounds `occurred_at`.
    pub fn validate(self, now: DateTime<Utc>) -> Result<Event, EventError> {
        let id = checked("id", self.id, |s| check_text(s, 200))?;
        if self.occurred_at > now + MAX_CLOCK_SKEW {
            return Err(EventError::invalid(
                "occurred_at",
                format!(
                    "{} is more than {} minutes ahead of this server's clock ({now}); check the sender's clock",
                    self.occurred_at,
                    MAX_CLOCK_SKEW.num_minutes()
                ),
            ));
        }
        let text = |field, v: Option<String>, max| {
            v.map(|s| checked(field, s, |s| check_text(s, max)))
                .transpose()
        };
        let rename = rename(self.kind, self.rename, self.mailbox.is_some())?;
        Ok(Event::validated(
            id,
            self.kind,
            self.occurred_at,
            account(self.account)?,
            self.mailbox.map(mailbox).transpose()?,
            text("source", self.source, 100)?,
            text("identity", self.identity, 200)?,
        )
        .with_rename(rename))
    }
}

/// A mover's new values: required on a mover (at least one), refused on any other event; a
/// mover names them in `rename`, not in `mailbox` (a joiner's wishes).
fn rename(
    kind: EventKind,
    rename: Option<Rename>,
    has_mailbox: bool,
) -> Result<Option<Rename>, EventError> {
    let Some(r) = rename else {
        if kind == EventKind::Mover {
            return Err(EventError::Missing(
                "rename (a mover's new alias, user_principal_name or primary_smtp_address)",
            ));
        }
        return Ok(None);
    };
    if kind != EventKind::Mover {
        return Err(EventError::invalid(
            "rename",
            format!("only a mover carries it, not a {kind}; send it with type \"mover\""),
        ));
    }
    if has_mailbox {
        return Err(EventError::invalid(
            "mailbox",
            "a mover names its new values in rename (alias, user_principal_name, primary_smtp_address), not in mailbox",
        ));
    }
    if r.is_empty() {
        return Err(EventError::invalid(
            "rename",
            "names nothing to change: give alias, user_principal_name or primary_smtp_address",
        ));
    }
    let address =
        |field, value: Option<String>| value.map(|a| checked(field, a, check_address)).transpose();
    Ok(Some(Rename {
        alias: r
            .alias
            .map(|a| checked("rename.alias", a, check_alias))
            .transpose()?,
        user_principal_name: address("rename.user_principal_name", r.user_principal_name)?,
        primary_smtp_address: address("rename.primary_smtp_address", r.primary_smtp_address)?,
    }))
}

fn account(a: DraftAccount) -> Result<Account, EventError> {
    let named = a.sam_account_name.is_some()
        || a.object_guid.is_some()
        || a.distinguished_name.is_some()
        || a.user_principal_name.is_some();
    if !named {
        return Err(EventError::Missing(
            "account.sam_account_name (or account.distinguished_name, account.object_guid, account.user_principal_name)",
        ));
    }
    Ok(Account {
        sam_account_name: a
            .sam_account_name
            .map(|s| account_name("account.sam_account_name", &s))
            .transpose()?,
        object_guid: a
            .object_guid
            .map(|g| guid("account.object_guid", &g))
            .transpose()?,
        user_principal_name: a
            .user_principal_name
            .map(|u| checked("account.user_principal_name", u, check_address))
            .transpose()?,
        distinguished_name: a
            .distinguished_name
            .map(|d| checked("account.distinguished_name", d, check_dn))
            .transpose()?,
        created_on_server: a
            .created_on_server
            .map(|h| checked("account.created_on_server", h, check_hostname))
            .transpose()?,
    })
}

fn mailbox(m: DraftMailbox) -> Result<Mailbox, EventError> {
    let address =
        |field, value: Option<String>| value.map(|a| checked(field, a, check_address)).transpose();
    Ok(Mailbox {
        alias: m
            .alias
            .map(|a| checked("mailbox.alias", a, check_alias))
            .transpose()?,
        remote_routing_address: address(
            "mailbox.remote_routing_address",
            m.remote_routing_address,
        )?,
        primary_smtp_address: address("mailbox.primary_smtp_address", m.primary_smtp_address)?,
        archive: m.archive,
        kind: m
            .kind
            .map(|k| {
                k.parse::<MailboxType>()
                    .map_err(|e| EventError::invalid("mailbox.type", e.to_string()))
            })
            .transpose()?
            .unwrap_or_default(),
        start_date: m
            .start_date
            .map(|d| {
                StartDate::parse(d.trim()).map_err(|r| EventError::invalid("mailbox.start_date", r))
            })
            .transpose()?,
    })
}

/// `raw` if `check` accepts it, else the field's error with `check`'s reason.
pub(super) fn checked(
    field: &'static str,
    raw: String,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<String, EventError> {
    check(&raw)
        .map(|()| raw)
        .map_err(|r| EventError::invalid(field, r))
}

/// A sAMAccountName, or the field's error.
pub(crate) fn account_name(field: &'static str, raw: &str) -> Result<AccountName, EventError> {
    AccountName::parse(raw).map_err(|r| EventError::invalid(field, r))
}

/// An objectGUID, with or without the braces AD tools print around it.
pub(super) fn guid(field: &'static str, raw: &str) -> Result<Uuid, EventError> {
    Uuid::parse_str(raw.trim_matches(|c| c == '{' || c == '}'))
        .map_err(|e| EventError::invalid(field, e.to_string()))
}

/// Free text: 1–`max` bytes, no control characters.
pub(crate) fn check_text(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1-{max} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

/// A distinguished name (RFC 4514): at most 2048 bytes, no control characters, and
/// comma-separated `type=value` components (a `\,` or `\+` escape inside a value allowed).
/// The attribute type is a name (`CN`, `OU`, `DC`, …) or an OID.
pub(crate) fn check_dn(s: &str) -> Result<(), String> {
    check_text(s, 2048)?;
    let mut component = String::new();
    let mut components = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                component.push(c);
                component.extend(chars.next());
            }
            ',' => components.push(std::mem::take(&mut component)),
            _ => component.push(c),
        }
    }
    components.push(component);
    for c in &components {
        let Some((kind, value)) = c.split_once('=') else {
            return Err(format!("component {c:?} is not of the form type=value"));
        };
        let kind = kind.trim();
        let name = kind.starts_with(|c: char| c.is_ascii_alphabetic())
            && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let oid = !kind.is_empty()
            && kind
                .split('.')
                .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if !(name || oid) || value.trim().is_empty() {
            return Err(format!("component {c:?} is not of the form type=value"));
        }
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
pub(crate) fn check_alias(s: &str) -> Result<(), String> {
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
    use super::*;

    #[test]
    fn distinguished_names_are_checked() {
        for ok in [
            "CN=J Doe,OU=Staff,DC=corp,DC=example",
            "CN=Doe\\, John,OU=Staff,DC=corp,DC=example",
            "cn=o'brien+uid=7, ou=x,dc=y",
            "2.5.4.3=x,DC=corp",
        ] {
            assert!(check_dn(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "jdoe",
            "CN=a,,DC=b",
            "CN=a,DC=",
            "=a,DC=b",
            "CN=a\0,DC=b",
            "CN=a\u{0},DC=b",
            "CN=a,DC=b\n",
        ] {
            assert!(check_dn(bad).is_err(), "{bad:?}");
        }
        assert!(check_dn(&format!("CN={},DC=b", "x".repeat(2048))).is_err());
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
