//! RFC 4515 search filters matched the way AD matches them: directory strings without
//! regard to case, `objectCategory=person` expanded, the bitwise matching rules on integers.

use ldap3_proto::proto::{LdapFilter, LdapSubstringFilter};

use super::entry::Entry;

const MATCH_BIT_AND: &str = "1.2.840.113556.1.4.803";
const MATCH_BIT_OR: &str = "1.2.840.113556.1.4.804";

/// The value `attr` must equal for `f` to match (an equality at the top or inside a
/// top-level AND), if the filter says so.
pub(super) fn required_equality<'a>(f: &'a LdapFilter, attr: &str) -> Option<&'a str> {
    match f {
        LdapFilter::Equality(a, v) if a.eq_ignore_ascii_case(attr) => Some(v.as_str()),
        LdapFilter::And(fs) => fs.iter().find_map(|f| required_equality(f, attr)),
        _ => None,
    }
}

fn eq_value(attr: &str, have: &[u8], want: &str) -> bool {
    if attr.eq_ignore_ascii_case("objectCategory") {
        // AD expands `objectCategory=person` to the class's defaultObjectCategory DN.
        let h = String::from_utf8_lossy(have);
        return h.eq_ignore_ascii_case(want)
            || h.to_lowercase()
                .starts_with(&format!("cn={},", want.to_lowercase()));
    }
    match std::str::from_utf8(have) {
        // Directory strings compare case-insensitively in AD.
        Ok(h) => h.to_lowercase() == want.to_lowercase(),
        Err(_) => have == want.as_bytes(),
    }
}

pub(super) fn matches(f: &LdapFilter, e: &Entry) -> bool {
    match f {
        LdapFilter::And(fs) => fs.iter().all(|f| matches(f, e)),
        LdapFilter::Or(fs) => fs.iter().any(|f| matches(f, e)),
        LdapFilter::Not(f) => !matches(f, e),
        LdapFilter::Present(a) => a.eq_ignore_ascii_case("objectClass") || e.get(a).is_some(),
        LdapFilter::Equality(a, v) | LdapFilter::Approx(a, v) => e
            .get(a)
            .is_some_and(|vals| vals.iter().any(|h| eq_value(a, h, v))),
        LdapFilter::Substring(a, sub) => e
            .get(a)
            .is_some_and(|vals| vals.iter().any(|h| substring_matches(sub, h))),
        LdapFilter::GreaterOrEqual(a, v) => compare(e, a, v, |o| o.is_ge()),
        LdapFilter::LessOrEqual(a, v) => compare(e, a, v, |o| o.is_le()),
        LdapFilter::Extensible(m) => {
            let (Some(rule), Some(a)) = (&m.matching_rule, &m.type_) else {
                return false;
            };
            let Ok(mask) = m.match_value.parse::<i64>() else {
                return false;
            };
            e.get(a)
                .is_some_and(|vals| vals.iter().any(|h| bitwise_matches(rule, mask, h)))
        }
    }
}

/// `initial*any*…*final`, without regard to case.
fn substring_matches(sub: &LdapSubstringFilter, have: &[u8]) -> bool {
    let h = String::from_utf8_lossy(have).to_lowercase();
    let mut rest = h.as_str();
    if let Some(init) = &sub.initial {
        let Some(r) = rest.strip_prefix(&init.to_lowercase()) else {
            return false;
        };
        rest = r;
    }
    for any in &sub.any {
        let any = any.to_lowercase();
        let Some(i) = rest.find(&any) else {
            return false;
        };
        rest = &rest[i + any.len()..];
    }
    sub.final_
        .as_ref()
        .is_none_or(|f| rest.ends_with(&f.to_lowercase()))
}

/// AD's bitwise matching rules (`userAccountControl:1.2.840.113556.1.4.803:=2`).
fn bitwise_matches(rule: &str, mask: i64, have: &[u8]) -> bool {
    let v = String::from_utf8_lossy(have).parse::<i64>().unwrap_or(0);
    match rule {
        MATCH_BIT_AND => v & mask == mask,
        MATCH_BIT_OR => v & mask != 0,
        _ => false,
    }
}

fn compare(e: &Entry, a: &str, want: &str, ok: impl Fn(std::cmp::Ordering) -> bool) -> bool {
    e.get(a).is_some_and(|vals| {
        vals.iter().any(|h| {
            let h = String::from_utf8_lossy(h);
            match (h.parse::<i64>(), want.parse::<i64>()) {
                (Ok(x), Ok(y)) => ok(x.cmp(&y)),
                _ => ok(h.to_lowercase().as_str().cmp(want.to_lowercase().as_str())),
            }
        })
    })
}
