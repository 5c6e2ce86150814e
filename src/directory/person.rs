//! People who sign in to the dashboard: their password checked by a simple bind as them
//! (over the directory's TLS, on the controller that found them), the state of their
//! account, and their group membership with nested groups resolved by the DC itself
//! (`LDAP_MATCHING_RULE_IN_CHAIN`, which AD and Samba both evaluate).

use std::time::Duration;

use ldap3::{Scope, SearchEntry, SearchOptions};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{
    Directory, DirectoryError, Lookup, ReadError, UAC_DISABLED, escape_filter_bytes,
    escape_filter_value,
};

/// msDS-User-Account-Control-Computed UF_LOCKOUT: AD computes it from lockoutTime and the
/// lockout policy (userAccountControl's own bit is never set on a DC).
const UF_LOCKOUT: i64 = 0x10;
/// The transitive member-of matching rule.
const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
const PERSON_ATTRS: [&str; 4] = [
    "objectGUID",
    "sAMAccountName",
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
];

/// A person's account as the DC shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// objectGUID: the same person whatever spelling of their name was typed.
    pub guid: Uuid,
    pub dn: String,
    pub sam_account_name: String,
    pub disabled: bool,
    pub locked: bool,
}

/// Why a sign-in's password check did not let the person in.
#[derive(Debug, thiserror::Error)]
pub enum PasswordRefused {
    #[error("wrong user name or password")]
    Wrong,
    #[error("the account is disabled in AD")]
    Disabled,
    #[error("the account is locked out in AD; wait for the lockout to end or ask for an unlock")]
    Locked,
    #[error("the password has expired or must be changed; change it, then sign in")]
    Expired,
    #[error(transparent)]
    Directory(#[from] DirectoryError),
}

/// A person found for a sign-in, and the controller that found them (where their password
/// is tried, so replication lag cannot make them unknown there).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub person: Person,
    url: url::Url,
}

/// The domain's account lockout policy (on the domain object): after `threshold` wrong
/// passwords within `observation_window` AD locks the account; 0 means never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub observation_window: Duration,
}

/// A person from a search entry; `None` without an objectGUID (not an AD account).
fn person_from(e: &SearchEntry) -> Option<Person> {
    let int = |name: &str| {
        super::first(e, name)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Some(Person {
        guid: super::entry::guid(e)?,
        dn: e.dn.clone(),
        sam_account_name: super::first(e, "sAMAccountName").unwrap_or_default(),
        disabled: int("userAccountControl") & UAC_DISABLED != 0,
        locked: int("msDS-User-Account-Control-Computed") & UF_LOCKOUT != 0,
    })
}

/// An interval attribute of AD (negative 100-nanosecond units) as a duration.
fn ad_interval(v: Option<String>) -> Duration {
    let ticks = v.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    Duration::from_nanos(ticks.unsigned_abs().saturating_mul(100))
}

/// What a refused bind as a person means: AD's diagnostic `data` code says it.
fn refused_bind(text: &str) -> PasswordRefused {
    if text.contains("data 533") {
        PasswordRefused::Disabled
    } else if text.contains("data 775") {
        PasswordRefused::Locked
    } else if ["data 532", "data 701", "data 773"]
        .iter()
        .any(|c| text.contains(c))
    {
        PasswordRefused::Expired
    } else {
        PasswordRefused::Wrong
    }
}

impl Directory {
    /// Runs one search on the first controller that answers (the service account's
    /// connection); returns the URL that answered and the entries. A base that names
    /// nothing (noSuchObject) is no entries.
    async fn search_anywhere(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
    ) -> Result<(url::Url, Vec<SearchEntry>), DirectoryError> {
        let mut tried = Vec::new();
        for url in self.order(None) {
            let conn = match self.connection(&url).await {
                Ok(c) => c,
                Err(ReadError::Unreachable(r)) => {
                    tried.push(format!("{url}: {r}"));
                    continue;
                }
                Err(ReadError::Fatal(e)) => return Err(e),
            };
            let secs = i32::try_from(self.inner.timeout.as_secs().max(1)).unwrap_or(i32::MAX);
            let result = conn
                .ldap
                .clone()
                .with_timeout(self.inner.timeout)
                .with_search_options(SearchOptions::new().sizelimit(2).timelimit(secs))
                .search(base, scope, filter, attrs.to_vec())
                .await;
            let (entries, res) = match result {
                Ok(r) => (r.0, r.1),
                Err(e) => {
                    // A pooled connection the DC closed: forget it, try the next DC.
                    self.drop_pooled(&url);
                    tried.push(format!("{url}: {e}"));
                    continue;
                }
            };
            // 4 sizeLimitExceeded: more than one entry, which the caller refuses as ambiguous.
            if ![0, 4, 32].contains(&res.rc) {
                return Err(DirectoryError::Search {
                    domain_controller: conn.dns_host_name,
                    reason: format!("LDAP result {} {}", res.rc, res.text),
                });
            }
            let mut entries: Vec<SearchEntry> = entries
                .into_iter()
                .filter(|e| !e.is_ref() && !e.is_intermediate())
                .filter_map(super::search_entry)
                .collect();
            if res.rc == 4 {
                // Make "more than one" visible even if the DC sent only the first.
                entries.extend(entries.first().cloned());
            }
            return Ok((url, entries));
        }
        Err(DirectoryError::AllUnreachable {
            tried: tried.join("; "),
        })
    }

    /// Finds the person a sign-in names (by sAMAccountName or UPN) with the service
    /// account; `None` when no single account matches.
    pub(crate) async fn find_person(
        &self,
        lookup: &Lookup,
    ) -> Result<Option<Candidate>, DirectoryError> {
        if matches!(lookup, Lookup::Guid(_)) {
            return Ok(None);
        }
        let (url, entries) = self
            .search_anywhere(
                &self.inner.base_dn,
                Scope::Subtree,
                &lookup.filter(),
                &PERSON_ATTRS,
            )
            .await?;
        let [entry] = entries.as_slice() else {
            return Ok(None);
        };
        Ok(person_from(entry).map(|person| Candidate { person, url }))
    }

    /// Checks a found person's password by a bind as them on a fresh connection to the
    /// controller that found them; a disabled or locked account is refused without a bind.
    /// The password goes only into that bind.
    pub(crate) async fn check_password(
        &self,
        who: &Candidate,
        password: &SecretString,
    ) -> Result<(), PasswordRefused> {
        let (person, url) = (&who.person, &who.url);
        // An empty password would be an unauthenticated bind, which a DC accepts.
        if password.expose_secret().is_empty() {
            return Err(PasswordRefused::Wrong);
        }
        if person.disabled {
            return Err(PasswordRefused::Disabled);
        }
        if person.locked {
            return Err(PasswordRefused::Locked);
        }
        if url.scheme() == "ldap" && !self.inner.starttls {
            tracing::warn!(dc = %url, "a person's password is checked over LDAP without TLS (ldap.allow_plaintext = true)");
        }
        let mut ldap = self.open(url).await.map_err(|e| match e {
            ReadError::Unreachable(tried) => DirectoryError::AllUnreachable { tried },
            ReadError::Fatal(e) => e,
        })?;
        let bound = ldap
            .simple_bind(&person.dn, password.expose_secret())
            .await
            .map_err(|e| DirectoryError::AllUnreachable {
                tried: format!("{url}: {e}"),
            })?;
        let _ = ldap.unbind().await;
        match bound.rc {
            0 => Ok(()),
            49 => Err(refused_bind(&bound.text)),
            rc => Err(PasswordRefused::Directory(DirectoryError::Search {
                domain_controller: url.to_string(),
                reason: format!(
                    "bind as {} answered LDAP result {rc} {}",
                    person.dn, bound.text
                ),
            })),
        }
    }

    /// The domain's lockout policy, read from the domain object (the `DC=` part of
    /// `ldap.base_dn`), which every authenticated account may read.
    pub async fn lockout_policy(&self) -> Result<LockoutPolicy, DirectoryError> {
        let root = domain_root(&self.inner.base_dn);
        let (_, entries) = self
            .search_anywhere(
                &root,
                Scope::Base,
                "(objectClass=*)",
                &["lockoutThreshold", "lockOutObservationWindow"],
            )
            .await?;
        let e = entries.first();
        let get = |name: &str| e.and_then(|e| super::first(e, name));
        Ok(LockoutPolicy {
            threshold: get("lockoutThreshold")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            observation_window: ad_interval(get("lockOutObservationWindow")),
        })
    }

    /// The person with this DN as the directory shows them now (`None`: gone).
    pub async fn person(&self, dn: &str) -> Result<Option<Person>, DirectoryError> {
        let (_, entries) = self
            .search_anywhere(dn, Scope::Base, "(objectClass=user)", &PERSON_ATTRS)
            .await?;
        Ok(entries.first().and_then(person_from))
    }

    /// Whether the object `dn` is a member of any of `groups` (DNs), directly or through
    /// nested groups.
    pub(crate) async fn member_of_any(
        &self,
        dn: &str,
        groups: &[String],
    ) -> Result<bool, DirectoryError> {
        if groups.is_empty() {
            return Ok(false);
        }
        let filter = format!(
            "(|{})",
            groups
                .iter()
                .map(|g| format!("(memberOf:{IN_CHAIN}:={})", escape_filter_value(g)))
                .collect::<String>()
        );
        let (_, entries) = self
            .search_anywhere(dn, Scope::Base, &filter, &["1.1"])
            .await?;
        Ok(!entries.is_empty())
    }
}

/// The group the Exchange Management Tools' rights come from without an Exchange server
/// (created by Add-PermissionForEMT.ps1; learn.microsoft.com, "Manage hybrid Exchange
/// recipients with management tools").
pub const EMT_GROUP: &str = "Recipient Management EMT";
/// Domain Admins' relative ID (MS-DTYP 2.4.2.4, DOMAIN_GROUP_RID_ADMINS): found by SID, so
/// the check holds on a DC whose groups carry localized names.
const DOMAIN_ADMINS_RID: u32 = 512;

/// What the account's recipient-management rights in snap-in mode rest on (no RBAC there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmtRights {
    /// A (possibly nested) member of this group, which grants them.
    Member(String),
    /// In neither group; `emt_group_exists` says whether Add-PermissionForEMT.ps1 ever ran.
    NotMember { emt_group_exists: bool },
    /// No account of that name under the domain.
    NoSuchAccount,
}

/// The SID of the domain's group with relative ID `rid`: the domain SID with one more
/// sub-authority (MS-DTYP 2.4.2.2: revision, count, 6-byte authority, 32-bit LE sub-authorities).
fn domain_group_sid(domain_sid: &[u8], rid: u32) -> Option<Vec<u8>> {
    let count = *domain_sid.get(1)?;
    if domain_sid.len() != 8 + 4 * usize::from(count) {
        return None;
    }
    let mut sid = domain_sid.to_vec();
    sid[1] = count.checked_add(1)?;
    sid.extend_from_slice(&rid.to_le_bytes());
    Some(sid)
}

impl Directory {
    /// Whether `account` (the WinRM account) is, directly or through nested groups, in
    /// "Recipient Management EMT" or Domain Admins: the only rights the Management Tools
    /// write with once no Exchange server is left. Reads only.
    pub async fn emt_rights(&self, account: &Lookup) -> Result<EmtRights, DirectoryError> {
        let root = domain_root(&self.inner.base_dn);
        let (_, who) = self
            .search_anywhere(&root, Scope::Subtree, &account.filter(), &["1.1"])
            .await?;
        let [who] = who.as_slice() else {
            return Ok(EmtRights::NoSuchAccount);
        };
        let (_, domain) = self
            .search_anywhere(&root, Scope::Base, "(objectClass=*)", &["objectSid"])
            .await?;
        let admins = domain
            .first()
            .and_then(|d| super::entry::first_bin(d, "objectSid"))
            .and_then(|sid| domain_group_sid(&sid, DOMAIN_ADMINS_RID))
            .map(|sid| format!("(objectSid={})", escape_filter_bytes(&sid)))
            .unwrap_or_default();
        let filter = format!(
            "(&(objectClass=group)(|(cn={}){admins}))",
            escape_filter_value(EMT_GROUP)
        );
        let (_, groups) = self
            .search_anywhere(&root, Scope::Subtree, &filter, &["cn"])
            .await?;
        for g in &groups {
            if self
                .member_of_any(&who.dn, std::slice::from_ref(&g.dn))
                .await?
            {
                return Ok(EmtRights::Member(super::first(g, "cn").unwrap_or_default()));
            }
        }
        let emt_group_exists = groups
            .iter()
            .any(|g| super::first(g, "cn").is_some_and(|cn| cn.eq_ignore_ascii_case(EMT_GROUP)));
        Ok(EmtRights::NotMember { emt_group_exists })
    }
}

/// The domain's own DN within `base_dn`: its `DC=` components (`OU=x,DC=corp,DC=example`
/// → `DC=corp,DC=example`).
fn domain_root(base_dn: &str) -> String {
    crate::config::split_unescaped(base_dn, ',')
        .into_iter()
        .map(str::trim)
        .filter(|rdn| rdn.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("DC=")))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockout_policy_is_read_from_the_domain_object_in_ad_units() {
        assert_eq!(
            domain_root("OU=People,DC=corp,DC=example"),
            "DC=corp,DC=example"
        );
        assert_eq!(domain_root("dc=corp, dc=example"), "dc=corp,dc=example");
        // 30 minutes, as AD stores it.
        assert_eq!(
            ad_interval(Some("-18000000000".into())),
            Duration::from_secs(1800)
        );
        assert_eq!(ad_interval(None), Duration::ZERO);
    }

    #[test]
    fn a_refused_bind_says_why_from_the_ad_data_code() {
        let text = |code: &str| {
            format!(
                "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}, v1db1"
            )
        };
        assert!(matches!(refused_bind(&text("52e")), PasswordRefused::Wrong));
        assert!(matches!(
            refused_bind(&text("533")),
            PasswordRefused::Disabled
        ));
        assert!(matches!(
            refused_bind(&text("775")),
            PasswordRefused::Locked
        ));
        assert!(matches!(
            refused_bind(&text("773")),
            PasswordRefused::Expired
        ));
        assert!(matches!(refused_bind(""), PasswordRefused::Wrong));
    }
}
