//! Reading an account from a search entry, and the RFC 4515 filters that find it: the
//! attribute values AD returns (text and binary) and the escaping that keeps event values
//! data inside a filter.

use ldap3::asn1::{PL, StructureTag};
use ldap3::{ResultEntry, SearchEntry};
use uuid::Uuid;

use super::{Account, RecipientType, UAC_DISABLED};
use crate::config::SyncRule;

pub(super) fn first(e: &SearchEntry, name: &str) -> Option<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first().cloned())
}

fn all(e: &SearchEntry, name: &str) -> Vec<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

pub(super) fn first_bin(e: &SearchEntry, name: &str) -> Option<Vec<u8>> {
    e.bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first().cloned())
        // ldap3 keeps a binary value that happens to be valid UTF-8 among the text ones.
        .or_else(|| first(e, name).map(String::into_bytes))
}

/// The entry's objectGUID (AD sends its bytes in little-endian field order).
pub(super) fn guid(e: &SearchEntry) -> Option<Uuid> {
    first_bin(e, "objectGUID")
        .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
        .map(Uuid::from_bytes_le)
}

fn present(e: &SearchEntry, name: &str) -> bool {
    e.attrs
        .keys()
        .chain(e.bin_attrs.keys())
        .any(|k| k.eq_ignore_ascii_case(name))
}

/// The entry of a search result, or `None` when it is not shaped as RFC 4511 §4.5.2 says
/// (a DN or attribute description that is not UTF-8, a missing part): ldap3's
/// `SearchEntry::construct` panics on those, and a DC's answer must not stop a worker.
pub fn search_entry(re: ResultEntry) -> Option<SearchEntry> {
    if well_formed(&re.0) {
        Some(SearchEntry::construct(re))
    } else {
        tracing::warn!("a domain controller sent a malformed search result entry; skipped");
        None
    }
}

/// `SearchResultEntry ::= [APPLICATION 4] SEQUENCE { objectName, attributes }`, each
/// attribute a SEQUENCE of a UTF-8 description and a SET of OCTET STRING values: exactly
/// what `SearchEntry::construct` expects of it.
fn well_formed(tag: &StructureTag) -> bool {
    let PL::C(parts) = &tag.payload else {
        return false;
    };
    let [dn, attrs, ..] = parts.as_slice() else {
        return false;
    };
    let PL::C(attrs) = &attrs.payload else {
        return false;
    };
    tag.id == 4 && utf8(dn) && attrs.iter().all(well_formed_attribute)
}

fn well_formed_attribute(attr: &StructureTag) -> bool {
    let PL::C(parts) = &attr.payload else {
        return false;
    };
    let [name, values, ..] = parts.as_slice() else {
        return false;
    };
    let PL::C(values) = &values.payload else {
        return false;
    };
    utf8(name) && values.iter().all(|v| matches!(v.payload, PL::P(_)))
}

fn utf8(tag: &StructureTag) -> bool {
    matches!(&tag.payload, PL::P(bytes) if std::str::from_utf8(bytes).is_ok())
}

/// What msExchPoliciesExcluded holds when a recipient's EmailAddressPolicyEnabled is false:
/// every policy excluded (Exchange writes it; the ConnId Exchange connector reads
/// EmailAddressPolicyEnabled off it the same way, `ExchangeUtility`).
pub(super) const ALL_POLICIES_EXCLUDED: &str = "{26491cfc-9e50-4857-861b-0cb8df22b5d7}";

/// Builds the account from the attributes a DC returned; missing attributes mean "not set".
pub fn account_from_entry(e: &SearchEntry, rule: SyncRule) -> Account {
    let uac = first(e, "userAccountControl")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let type_details = first(e, "msExchRecipientTypeDetails").and_then(|v| v.parse::<i64>().ok());
    let cloud_synced = match rule {
        SyncRule::ConsistencyGuid => present(e, "mS-DS-ConsistencyGuid"),
        SyncRule::ExternalDirectoryObjectId => present(e, "msDS-ExternalDirectoryObjectId"),
        SyncRule::Off => true,
    };
    Account {
        distinguished_name: e.dn.clone(),
        sam_account_name: first(e, "sAMAccountName").unwrap_or_default(),
        user_principal_name: first(e, "userPrincipalName"),
        object_guid: guid(e),
        user_account_control: uac,
        disabled: uac & UAC_DISABLED != 0,
        recipient: RecipientType::from_type_details(type_details),
        recipient_type_details: type_details,
        remote_recipient_type: first(e, "msExchRemoteRecipientType")
            .and_then(|v| v.parse::<i64>().ok()),
        hidden: first(e, "msExchHideFromAddressLists")
            .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
        target_address: first(e, "targetAddress"),
        mail: first(e, "mail"),
        proxy_addresses: all(e, "proxyAddresses"),
        alias: first(e, "mailNickname"),
        cloud_synced,
        archive_guid: first_bin(e, "msExchArchiveGUID")
            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
            .map(Uuid::from_bytes_le)
            .filter(|g| !g.is_nil()),
        archive_name: first(e, "msExchArchiveName"),
        archive_status: first(e, "msExchArchiveStatus").and_then(|v| v.parse::<i64>().ok()),
        external_directory_object_id: first(e, "msDS-ExternalDirectoryObjectId"),
        address_policy_enabled: !all(e, "msExchPoliciesExcluded")
            .iter()
            .any(|v| v.trim().eq_ignore_ascii_case(ALL_POLICIES_EXCLUDED)),
    }
}

/// Escapes a value for an LDAP search filter (RFC 4515 §3): `*`, `(`, `)`, `\` and NUL,
/// plus every non-printable or non-ASCII byte, as `\XX`.
pub fn escape_filter_value(value: &str) -> String {
    escape_filter_bytes(value.as_bytes())
}

/// Escapes raw octets for a filter; printable ASCII other than the specials stays as is.
pub fn escape_filter_bytes(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
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

/// The RDNs of a DN (RFC 4514), from the left, each as `type=value` with its escapes
/// decoded (`\,` and `\2C` alike), spaces around the parts dropped and lower-cased: what
/// AD compares a DN by. `None` when an escape is cut off or not one.
fn dn_parts(dn: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut part: Vec<u8> = Vec::new();
    let bytes = dn.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        part.push(b);
                        i += 3;
                    }
                    None => {
                        part.push(next);
                        i += 2;
                    }
                }
                continue;
            }
            b',' => parts.push(std::mem::take(&mut part)),
            b => part.push(b),
        }
        i += 1;
    }
    parts.push(part);
    parts
        .into_iter()
        .map(|p| {
            let text = String::from_utf8(p).ok()?;
            let (kind, value) = text.split_once('=')?;
            Some(format!("{}={}", kind.trim(), value.trim()).to_lowercase())
        })
        .collect()
}

/// `Ok` when `dn` names an object at or under `base_dn` (compared as AD compares DNs), so
/// that an event's DN can only ever name an account mailboxd manages; else why not.
pub(super) fn check_under(dn: &str, base_dn: &str) -> Result<(), String> {
    let (Some(dn_parts), Some(base)) = (dn_parts(dn), dn_parts(base_dn)) else {
        return Err("is not a distinguished name (a broken escape); fix the event".into());
    };
    if dn_parts.len() > base.len() && dn_parts.ends_with(&base) {
        return Ok(());
    }
    Err(format!(
        "is not under [ldap].base_dn {base_dn:?}: mailboxd manages only the accounts there; fix the DN in the event (or base_dn, if the account is meant to be managed)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Lookup;

    /// Found writing the `ldap_entry` fuzz target: ldap3's `SearchEntry::construct` panics
    /// on an entry whose DN is not UTF-8 (the seed `fuzz/corpus/ldap_entry/bad-dn.ber`).
    #[test]
    fn a_malformed_search_entry_is_skipped_instead_of_panicking() {
        let entry = |bytes: &[u8]| {
            let (_, tag) = ldap3::asn1::parse_tag(bytes).expect("BER");
            search_entry(ResultEntry::new(tag))
        };
        // [APPLICATION 4] { DN 0xff 0xfe, { { "cn", { 0xff } } } }
        let bad_dn = [
            0x64, 0x11, 0x04, 0x02, 0xff, 0xfe, 0x30, 0x0b, 0x30, 0x09, 0x04, 0x02, b'c', b'n',
            0x31, 0x03, 0x04, 0x01, 0xff,
        ];
        assert!(entry(&bad_dn).is_none());
        // No attribute list at all.
        assert!(entry(&[0x64, 0x03, 0x04, 0x01, b'x']).is_none());
        // The same entry with a UTF-8 DN is read, its binary value kept as bytes.
        let mut good = bad_dn;
        good[4..6].copy_from_slice(b"CN");
        let read = entry(&good).expect("a well-formed entry");
        assert_eq!(read.dn, "CN");
        assert_eq!(read.bin_attrs["cn"], vec![vec![0xff]]);
    }

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

    #[test]
    fn a_dn_must_lie_under_the_base_dn_compared_as_ad_compares_dns() {
        let base = "DC=corp,DC=example";
        for ok in [
            "CN=J Doe,OU=Staff,DC=corp,DC=example",
            "cn=j doe, ou=staff, dc=CORP, dc=Example",
            "CN=Doe\\, John,OU=Staff,DC=corp,DC=example",
            "CN=x,DC=corp,DC=\\65xample",
        ] {
            assert_eq!(check_under(ok, base), Ok(()), "{ok}");
        }
        for bad in [
            "DC=corp,DC=example",
            "CN=x,DC=corp,DC=evil",
            "CN=x,DC=corp\\,DC=example",
            "CN=x,DC=example",
            "CN=x\\",
            "CN=Administrator,CN=Users,DC=other,DC=example",
        ] {
            assert!(check_under(bad, base).is_err(), "{bad}");
        }
        // A DN with a \\2C is the DN with \\, (one RDN whose value holds a comma).
        assert_eq!(dn_parts("CN=a\\2Cb,DC=x"), dn_parts("cn=a\\,b, dc=X"));
    }

    #[test]
    fn dn_lookups_read_the_dn_as_a_base_object_and_never_as_filter_text() {
        let dn = "CN=x)(objectClass=*,OU=Staff,DC=corp,DC=example";
        let (base, scope, filter) = Lookup::Dn(dn.into()).search("DC=corp,DC=example");
        assert_eq!((base.as_str(), scope), (dn, ldap3::Scope::Base));
        assert_eq!(filter, "(&(objectCategory=person)(objectClass=user))");
        assert!(Lookup::Dn(dn.into()).filter().ends_with(
            "(distinguishedName=CN=x\\29\\28objectClass=\\2a,OU=Staff,DC=corp,DC=example))"
        ));
    }

    #[test]
    fn guid_filters_use_the_wire_byte_order() {
        // objectGUID is 16 raw octets in the .NET layout: the first three fields of the string
        // form are little-endian on the wire.
        let g = Uuid::parse_str("b1f0a2c3-d4e5-f607-1829-3a4b5c6d7e8f").unwrap();
        assert_eq!(
            Lookup::Guid(g).filter(),
            r"(&(objectClass=user)(objectGUID=\c3\a2\f0\b1\e5\d4\07\f6\18\29\3a\4b\5c\6d\7e\8f))"
        );
    }

    #[test]
    fn recipient_types_follow_exchange_values() {
        use RecipientType::{MailUser, OnPremMailbox, Other, RemoteMailbox};
        assert_eq!(RecipientType::from_type_details(None), RecipientType::None);
        assert_eq!(
            RecipientType::from_type_details(Some(2_147_483_648)),
            RemoteMailbox
        );
        assert_eq!(
            RecipientType::from_type_details(Some(34_359_738_368)),
            RemoteMailbox
        );
        assert_eq!(RecipientType::from_type_details(Some(1)), OnPremMailbox);
        assert_eq!(RecipientType::from_type_details(Some(4)), OnPremMailbox);
        assert_eq!(RecipientType::from_type_details(Some(128)), MailUser);
        assert_eq!(RecipientType::from_type_details(Some(64)), Other);
    }
}
