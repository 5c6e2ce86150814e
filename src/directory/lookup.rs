//! How an account is found: by whichever name the event gave (objectGUID, sAMAccountName,
//! userPrincipalName, distinguishedName), as an LDAP search with every value escaped.

use ldap3::Scope;
use uuid::Uuid;

use super::{account_filter, escape_filter_value};

/// How to find an account: objectGUID is exact and survives renames; otherwise the
/// sAMAccountName, the UPN or the distinguishedName.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Guid(Uuid),
    Sam(String),
    Upn(String),
    /// A distinguishedName (checked as one by the event's validation): read as the base
    /// object of a base-scope search, never put into a filter.
    Dn(String),
}

/// The filter every account search ends in: a person's user object.
const PERSON: &str = "(&(objectCategory=person)(objectClass=user))";

impl Lookup {
    /// How to find the account an event names: by its objectGUID when the event gives one
    /// (exact, survives renames and moves), else its sAMAccountName, its distinguishedName,
    /// its userPrincipalName, in that order. `None`: the event names none.
    pub fn of(account: &crate::event::Account) -> Option<Lookup> {
        if let Some(g) = account.object_guid {
            return Some(Lookup::Guid(g));
        }
        if let Some(sam) = &account.sam_account_name {
            return Some(Lookup::Sam(sam.as_str().to_owned()));
        }
        account
            .distinguished_name
            .clone()
            .map(Lookup::Dn)
            .or_else(|| account.user_principal_name.clone().map(Lookup::Upn))
    }

    /// Whether AD not showing the account may mean the name is wrong or out of date
    /// rather than that the account is gone: a DN changes when the account is moved or
    /// renamed, a UPN when it is renamed. A missing objectGUID or sAMAccountName is gone.
    pub fn may_be_stale(&self) -> bool {
        matches!(self, Lookup::Dn(_) | Lookup::Upn(_))
    }

    /// Where and how to search. A GUID is read as AD's `<GUID=…>` base object (AD and Samba
    /// both resolve it, and it keeps binary values out of the filter); names are searched
    /// in the subtree with an escaped filter.
    pub fn search(&self, base_dn: &str) -> (String, Scope, String) {
        match self {
            Lookup::Guid(g) => (
                format!("<GUID={g}>"),
                Scope::Base,
                "(objectClass=user)".into(),
            ),
            Lookup::Dn(dn) => (dn.clone(), Scope::Base, PERSON.into()),
            _ => (base_dn.to_owned(), Scope::Subtree, self.filter()),
        }
    }

    /// The LDAP filter, every value escaped (RFC 4515); a GUID as its escaped octets.
    pub fn filter(&self) -> String {
        match self {
            Lookup::Guid(g) => format!(
                "(&(objectClass=user)(objectGUID={}))",
                g.to_bytes_le()
                    .iter()
                    .map(|b| format!("\\{b:02x}"))
                    .collect::<String>()
            ),
            Lookup::Sam(s) => account_filter(s),
            Lookup::Upn(u) => format!(
                "(&(objectCategory=person)(objectClass=user)(userPrincipalName={}))",
                escape_filter_value(u)
            ),
            Lookup::Dn(dn) => format!(
                "(&(objectCategory=person)(objectClass=user)(distinguishedName={}))",
                escape_filter_value(dn)
            ),
        }
    }
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Guid(g) => write!(f, "objectGUID {g}"),
            Lookup::Sam(s) => write!(f, "sAMAccountName {s:?}"),
            Lookup::Upn(u) => write!(f, "userPrincipalName {u:?}"),
            Lookup::Dn(dn) => write!(f, "distinguishedName {dn:?}"),
        }
    }
}
