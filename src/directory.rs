//! Directory checks against Active Directory (design §4).
//!
//! This slice has the data types and the RFC 4515 filter escaping; the LDAP client
//! (ldap3, LDAPS/StartTLS, DC failover) arrives with its own issue. Until `[ldap].urls`
//! is set, the worker skips the pre-check and relies on what Exchange answers, which is
//! still idempotent: the templates map "already a remote mailbox" to a no-op.

use serde::Serialize;

/// What the directory says about an account before mailboxd acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum AccountState {
    /// No directory is configured: nothing was checked.
    NotChecked,
    NotFound {
        domain_controller: String,
    },
    Found {
        domain_controller: String,
        disabled: bool,
        remote_mailbox: bool,
        onprem_mailbox: bool,
        hidden: bool,
    },
}

/// Escapes a value for an LDAP search filter (RFC 4515 §3): `*`, `(`, `)`, `\` and NUL,
/// plus every non-printable or non-ASCII byte, as `\XX`.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'*' | b'(' | b')' | b'\\' | 0 => out.push_str(&format!("\\{b:02x}")),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:02x}")),
        }
    }
    out
}

/// `(&(objectCategory=person)(objectClass=user)(sAMAccountName=<escaped>))`
pub fn account_filter(sam_account_name: &str) -> String {
    format!(
        "(&(objectCategory=person)(objectClass=user)(sAMAccountName={}))",
        escape_filter_value(sam_account_name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_cannot_break_out_of_their_assertion() {
        assert_eq!(escape_filter_value("jdoe"), "jdoe");
        assert_eq!(
            escape_filter_value("*)(objectClass=*"),
            "\\2a\\29\\28objectClass=\\2a"
        );
        assert_eq!(escape_filter_value("a\\b\0"), "a\\5cb\\00");
        assert_eq!(escape_filter_value("jürgen"), "j\\c3\\bcrgen");
        let f = account_filter("x)(|(cn=*");
        assert_eq!(f.matches('(').count(), f.matches(')').count());
        assert!(!f.contains("(|"));
    }
}
