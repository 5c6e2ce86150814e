//! The rules Active Directory and Exchange apply to each value of an event. Every value
//! later reaches an LDAP filter or a PowerShell cmdlet (as data), so each is checked here,
//! once, with a reason an IAM engineer can act on; both decoders use these checks.

use uuid::Uuid;

use super::error::EventError;
use super::model::AccountName;

/// `raw` if `check` accepts it, else the field's error with `check`'s reason.
pub fn checked(
    field: &'static str,
    raw: String,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Result<String, EventError> {
    check(&raw)
        .map(|()| raw)
        .map_err(|r| EventError::invalid(field, r))
}

/// A sAMAccountName, or the field's error.
pub fn account_name(field: &'static str, raw: &str) -> Result<AccountName, EventError> {
    AccountName::parse(raw).map_err(|r| EventError::invalid(field, r))
}

/// An objectGUID, with or without the braces AD tools print around it.
pub fn guid(field: &'static str, raw: &str) -> Result<Uuid, EventError> {
    Uuid::parse_str(raw.trim_matches(|c| c == '{' || c == '}'))
        .map_err(|e| EventError::invalid(field, e.to_string()))
}

/// Free text: 1–`max` bytes, no control characters.
pub fn check_text(s: &str, max: usize) -> Result<(), String> {
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
pub fn check_alias(s: &str) -> Result<(), String> {
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
