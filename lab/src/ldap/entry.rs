//! An account as a domain controller shows it: the attributes AD and Exchange keep, with
//! AD's spellings and encodings (objectGUID as 16 raw bytes, userAccountControl flags).

use ldap3_proto::proto::{LdapPartialAttribute, LdapSearchResultEntry};
use uuid::Uuid;

use super::LAB_DC;
use crate::directory::{LAB_BASE_DN, LabAccount};

const OBJECT_CATEGORY_PERSON: &str = "CN=Person,CN=Schema,CN=Configuration,DC=corp,DC=example";

/// An entry as attribute name → values (names as AD spells them).
pub(super) struct Entry {
    pub(super) dn: String,
    pub(super) attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    pub(super) fn get(&self, name: &str) -> Option<&Vec<Vec<u8>>> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

fn text(v: impl Into<String>) -> Vec<Vec<u8>> {
    vec![v.into().into_bytes()]
}

pub(super) fn root_dse() -> Entry {
    Entry {
        dn: String::new(),
        attrs: vec![
            ("dnsHostName".into(), text(LAB_DC)),
            ("defaultNamingContext".into(), text(LAB_BASE_DN)),
            ("rootDomainNamingContext".into(), text(LAB_BASE_DN)),
            (
                "serverName".into(),
                text(format!(
                    "CN=LAB-DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,{LAB_BASE_DN}"
                )),
            ),
            ("supportedLDAPVersion".into(), text("3")),
            ("isSynchronized".into(), text("TRUE")),
            ("objectClass".into(), text("top")),
        ],
    }
}

/// The account as a domain controller shows it.
pub(super) fn entry(a: &LabAccount, synced: bool) -> Entry {
    let mut attrs: Vec<(String, Vec<Vec<u8>>)> = vec![
        (
            "objectClass".into(),
            ["top", "person", "organizationalPerson", "user"]
                .iter()
                .map(|c| c.as_bytes().to_vec())
                .collect(),
        ),
        ("objectCategory".into(), text(OBJECT_CATEGORY_PERSON)),
        ("cn".into(), text(a.sam_account_name.clone())),
        (
            "distinguishedName".into(),
            text(a.distinguished_name.clone()),
        ),
        ("sAMAccountName".into(), text(a.sam_account_name.clone())),
        (
            "userPrincipalName".into(),
            text(a.user_principal_name.clone()),
        ),
        (
            "objectGUID".into(),
            vec![a.object_guid.to_bytes_le().to_vec()],
        ),
        (
            "userAccountControl".into(),
            text(if a.disabled { "514" } else { "512" }),
        ),
    ];
    let mut opt = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            attrs.push((name.into(), text(v)));
        }
    };
    opt(
        "msExchRecipientTypeDetails",
        a.msExchRecipientTypeDetails.map(|v| v.to_string()),
    );
    opt(
        "msExchRemoteRecipientType",
        a.msExchRemoteRecipientType.map(|v| v.to_string()),
    );
    opt(
        "msExchRecipientDisplayType",
        a.msExchRecipientDisplayType.map(|v| v.to_string()),
    );
    opt(
        "msExchHideFromAddressLists",
        a.msExchHideFromAddressLists
            .map(|h| if h { "TRUE" } else { "FALSE" }.to_owned()),
    );
    opt("targetAddress", a.targetAddress.clone());
    opt("msExchArchiveName", a.msExchArchiveName.clone());
    opt(
        "msExchArchiveStatus",
        a.msExchArchiveStatus.map(|v| v.to_string()),
    );
    opt("mailNickname", a.mailNickname.clone());
    opt("msExchPoliciesExcluded", a.msExchPoliciesExcluded.clone());
    opt("mail", a.primary_smtp_address.clone());
    opt("givenName", a.given_name.clone());
    opt("sn", a.surname.clone());
    if let Some(g) = a.msExchArchiveGUID {
        attrs.push(("msExchArchiveGUID".into(), vec![g.to_bytes_le().to_vec()]));
    }
    if !a.proxy_addresses.is_empty() {
        attrs.push((
            "proxyAddresses".into(),
            a.proxy_addresses
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
        ));
    }
    if synced {
        // What Entra Connect writes: the source anchor, and (hybrid writeback, cloudAnchor,
        // for every user in scope: `cloud` module docs) the cloud id.
        attrs.push((
            "mS-DS-ConsistencyGuid".into(),
            vec![a.object_guid.to_bytes_le().to_vec()],
        ));
        attrs.push((
            "msDS-ExternalDirectoryObjectId".into(),
            text(format!("User_{}", cloud_id(a.object_guid))),
        ));
    }
    Entry {
        dn: a.distinguished_name.clone(),
        attrs,
    }
}

/// A stable stand-in for the Entra object id of a synced account.
fn cloud_id(g: Uuid) -> Uuid {
    crate::cloud::object_id(g)
}

pub(super) fn select(e: &Entry, wanted: &[String], types_only: bool) -> LdapSearchResultEntry {
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "*");
    let none = wanted.len() == 1 && wanted[0] == "1.1";
    let attributes = e
        .attrs
        .iter()
        .filter(|(k, _)| !none && (all || wanted.iter().any(|w| w.eq_ignore_ascii_case(k))))
        .map(|(k, v)| LdapPartialAttribute {
            atype: k.clone(),
            vals: if types_only { Vec::new() } else { v.clone() },
        })
        .collect();
    LdapSearchResultEntry {
        dn: e.dn.clone(),
        attributes,
    }
}
